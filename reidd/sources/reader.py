"""Per-camera frame readers: video files, RTSP and HTTP streams, with reconnect and back-off.

Each :class:`CameraReader` owns one daemon thread that decodes its source with OpenCV's FFmpeg backend
and hands frames to the pipeline through a small bounded queue:

* replay (``replay=True``): every selected frame is delivered; the reader waits while the queue is full.
* live (``replay=False``): the newest frame wins; when the queue is full the oldest queued frame is
  dropped and counted in :attr:`SourceStats.frames_dropped`.

A file camera with ``loop: true`` read live starts again at the end of the file, its frame indices and media time
going on from the last pass (:attr:`CameraReader.passes` counts the passes done); a replay plays it once.

:attr:`CameraReader.queue_depth` is how many frames wait in that queue (``reidd_queue_depth``).

Whatever happens, the queue ends with exactly one :class:`SourceEnd` telling why the reader stopped.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import cv2
import numpy as np

from reidd.config import CameraConfig, redact_url
from reidd.types import Frame

log = logging.getLogger("reidd.sources")

#: Frame rate assumed for files whose container reports none (or nonsense).
FALLBACK_FPS = 25.0
#: A file that stops decoding this far short of its declared frame count is reported as failed.
_TRUNCATION_TOLERANCE = (2, 0.05)  # frames, fraction of the declared count (whichever is larger)
#: A paced file reader that falls this far behind its schedule starts a new schedule (no catch-up burst).
_MAX_PACING_LAG_S = 1.0
_ENV_OPTIONS = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class SourceState(str, Enum):
    """Life cycle of a reader."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    FINISHED = "finished"
    STOPPED = "stopped"


@dataclass
class SourceEnd:
    """The last item a reader queues: why it ended (``error`` is None for end of file or stop)."""

    camera_id: str
    error: str | None


@dataclass
class SourceStats:
    """Counters updated by the reader thread (read them from anywhere, e.g. for metrics)."""

    frames_read: int = 0  # frames decoded
    frames_emitted: int = 0  # frames queued (after stride / max_fps)
    frames_dropped: int = 0  # live only: queued frames discarded because the queue was full
    reconnects: int = 0  # reconnection attempts after a failure
    last_error: str | None = None
    last_frame_wall: float = 0.0  # time.time() of the last decoded frame


class _SourceFailed(Exception):
    """Raised inside the reader thread when the source is unusable for good."""


class _CaptureOptionsGate:
    """Serialises the process-global ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` around stream opens.

    OpenCV reads the variable when a capture is opened. Opens that want the same value run concurrently;
    an open that wants a different value waits until the others have returned. The user's own value of
    the variable is kept (our ``rtsp_transport`` replaces theirs) and restored when no open is running.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: str | None = None
        self._users = 0
        self._saved: str | None = None

    @staticmethod
    def options_for(transport: str, base: str | None) -> str:
        kept = [kv for kv in (base or "").split("|") if kv and not kv.startswith("rtsp_transport;")]
        return "|".join([f"rtsp_transport;{transport}", *kept])

    @contextmanager
    def use(self, transport: str) -> Iterator[None]:
        with self._cond:
            while True:
                base = os.environ.get(_ENV_OPTIONS) if self._users == 0 else self._saved
                value = self.options_for(transport, base)
                if self._users == 0 or self._value == value:
                    break
                self._cond.wait()
            if self._users == 0:
                self._saved = base
                self._value = value
                os.environ[_ENV_OPTIONS] = value
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    if self._saved is None:
                        os.environ.pop(_ENV_OPTIONS, None)
                    else:
                        os.environ[_ENV_OPTIONS] = self._saved
                    self._value = None
                self._cond.notify_all()


_OPTIONS_GATE = _CaptureOptionsGate()
_PARALLEL_LOCK = threading.Lock()
_parallel_checked = False


def _allow_parallel_opens() -> None:
    """Let OpenCV open several FFmpeg captures at once (once per process).

    By default OpenCV serialises every FFmpeg open behind one global mutex, so a camera whose open hangs
    (up to ``open_timeout_s``) would hold up every other camera's open, files included. FFmpeg >= 4
    (libavcodec 58) is thread-safe here, and OpenCV then honours ``OPENCV_FFMPEG_IS_THREAD_SAFE=1``.
    A value the user set is left alone.
    """
    global _parallel_checked
    with _PARALLEL_LOCK:
        if _parallel_checked:
            return
        _parallel_checked = True
        if "OPENCV_FFMPEG_IS_THREAD_SAFE" in os.environ:
            return
        m = re.search(r"avcodec:\s+YES \((\d+)", cv2.getBuildInformation())
        if m and int(m.group(1)) >= 58:
            os.environ["OPENCV_FFMPEG_IS_THREAD_SAFE"] = "1"
        else:
            log.warning("OpenCV's FFmpeg is old or unknown: stream opens are serialised; a hanging camera "
                        "delays the others' (re)connection by up to its open_timeout_s")


def _valid_fps(value: float) -> float | None:
    return float(value) if math.isfinite(value) and 0.1 <= value <= 1000.0 else None


class CameraReader:
    """Reads one camera on its own thread; the pipeline pulls with :meth:`get`.

    ``replay`` selects the queue policy (see the module doc). ``speed`` paces file sources to ``speed``
    times real time by media time (None: as fast as possible); a file in live mode is paced at
    ``speed or 1.0`` so that it behaves like a camera. ``on_state(camera_id, state)`` is called on every
    state change, from the reader thread (or from :meth:`stop` when the thread is stuck in a native call).
    ``seed`` seeds the back-off jitter.
    """

    def __init__(
        self,
        cam: CameraConfig,
        *,
        replay: bool,
        speed: float | None = None,
        on_state: Callable[[str, SourceState], None] | None = None,
        seed: int = 0,
    ):
        if speed is not None and not speed > 0:
            raise ValueError(f"camera '{cam.id}': speed must be > 0, got {speed}")
        self.cam = cam
        self.camera_id = cam.id
        self.replay = replay
        self.is_file = cam.kind == "file"
        # cameras[].loop: files played live start again at their end; a replay plays each file once
        self.loop = self.is_file and cam.loop and not replay
        self.passes = 0  # looping files: passes over the file completed so far
        self.speed = speed if replay else (speed or 1.0)
        self.state = SourceState.CONNECTING
        self.stats = SourceStats()
        self.fps: float | None = None
        self._on_state = on_state
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._buf: deque[Frame | SourceEnd] = deque()
        self._ended = False
        self._thread: threading.Thread | None = None
        self._where = f"file {cam.url}" if self.is_file else f"url {redact_url(cam.url)}"
        self._stream_index = 0  # live streams: decoded frames so far, across reconnects
        self._next_due = 0.0  # live streams with max_fps: monotonic time the next frame may be emitted

    # ------------------------------------------------------------------ public API
    def start(self) -> None:
        """Start the reader thread (once)."""
        if self._thread is not None:
            raise RuntimeError(f"camera '{self.camera_id}': reader already started")
        _allow_parallel_opens()
        self._thread = threading.Thread(target=self._run, name=f"reader-{self.camera_id}", daemon=True)
        self._thread.start()

    def get(self, timeout: float | None) -> Frame | SourceEnd | None:
        """The next frame or the final :class:`SourceEnd`; None when nothing came within ``timeout`` s."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._buf), timeout):
                return None
            item = self._buf.popleft()
            self._cond.notify_all()
            return item

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait up to ``timeout`` s; idempotent.

        Waits on a full queue, back-off sleeps and pacing end at once. A native open/read that is in
        progress cannot be interrupted: it returns within the camera's open/read timeout, after which the
        thread releases the capture. If it is still running when ``timeout`` expires, the reader is
        marked STOPPED and its :class:`SourceEnd` queued here; the thread then exits without queuing more.
        """
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if not self._thread.is_alive():
                return
            log.warning("camera %s: reader thread still inside a blocking read; it will exit when it returns",
                        self.camera_id)
        self._end(SourceState.STOPPED, None)

    @property
    def queue_depth(self) -> int:
        """Frames queued for the pipeline right now (the final :class:`SourceEnd` is not counted).

        At most ``cam.queue_size``; safe to read from any thread (the ``reidd_queue_depth`` metric)."""
        with self._cond:
            n = len(self._buf)
            if n and self._ended and isinstance(self._buf[-1], SourceEnd):
                n -= 1
            return n

    @property
    def alive(self) -> bool:
        """True while the reader thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ queue and state
    def _notify(self, state: SourceState) -> None:
        if self._on_state is not None:
            try:
                self._on_state(self.camera_id, state)
            except Exception:  # a broken callback must not kill the reader
                log.exception("camera %s: on_state callback failed", self.camera_id)

    def _set_state(self, state: SourceState) -> None:
        with self._cond:
            if self._ended or state == self.state:
                return
            self.state = state
        log.info("camera %s: %s", self.camera_id, state.value)
        self._notify(state)

    def _end(self, state: SourceState, error: str | None) -> None:
        """Enter a final state, tell on_state, then queue the one SourceEnd (later calls do nothing)."""
        with self._cond:
            if self._ended:
                return
            self.state = state
            self._ended = True  # no frame is queued from now on
            if error is not None:
                self.stats.last_error = error
        if error is None:
            log.info("camera %s: %s", self.camera_id, state.value)
        else:
            log.error("camera %s: %s: %s", self.camera_id, state.value, error)
        self._notify(state)
        with self._cond:
            self._buf.append(SourceEnd(self.camera_id, error))
            self._cond.notify_all()

    def _put(self, frame: Frame) -> bool:
        """Queue a frame by the mode's policy; False once stopped."""
        size = self.cam.queue_size
        with self._cond:
            if self.replay:
                while len(self._buf) >= size and not self._stop.is_set():
                    self._cond.wait(0.5)
            if self._stop.is_set() or self._ended:
                return False
            while len(self._buf) >= size:
                self._buf.popleft()
                self.stats.frames_dropped += 1
            self._buf.append(frame)
            self.stats.frames_emitted += 1
            self._cond.notify_all()
            return True

    # ------------------------------------------------------------------ thread body
    def _run(self) -> None:
        log.info("camera %s: %s (%s)", self.camera_id, self.state.value, self._where)
        self._notify(self.state)
        try:
            if self.is_file:
                self._run_file()
            else:
                self._run_stream()
        except _SourceFailed as exc:
            self._end(SourceState.FAILED, str(exc))
        except Exception as exc:  # unexpected: report it rather than dying silently
            log.exception("camera %s: reader crashed", self.camera_id)
            self._end(SourceState.FAILED, f"camera '{self.camera_id}' ({self._where}): reader crashed: {exc!r}")
        else:
            self._end(SourceState.STOPPED, None)

    def _fail(self, what: str) -> _SourceFailed:
        return _SourceFailed(f"camera '{self.camera_id}' ({self._where}): {what}")

    @staticmethod
    def _read(cap: cv2.VideoCapture, keep: bool) -> tuple[bool, np.ndarray | None, str | None]:
        """Decode one frame (converting it only when ``keep``); (ok, image, error)."""
        try:
            if keep:
                ok, img = cap.read()
                return bool(ok) and img is not None, img, None
            return bool(cap.grab()), None, None
        except cv2.error as exc:
            return False, None, str(exc).strip().splitlines()[-1]

    def _count_read(self) -> None:
        self.stats.frames_read += 1
        self.stats.last_frame_wall = time.time()

    # ------------------------------------------------------------------ files
    def _run_file(self) -> None:
        path = Path(self.cam.url)
        base = 0  # frames of the passes before this one: indices and media time go on from there
        t0 = time.monotonic()
        fps: float | None = None
        while True:
            if not path.is_file():
                raise self._fail("video file not found" if not path.exists() else "not a regular file")
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
            try:
                if not cap.isOpened():
                    raise self._fail("cannot open the video (not a video file, corrupt, or unsupported codec)")
                fps = fps or self._file_fps(cap)  # the first pass's rate: media time stays on one scale
                decoded, t0 = self._read_file(cap, fps, base, t0)
            finally:
                cap.release()
            if self._stop.is_set() or decoded is None:
                return
            if not self.loop:
                break
            base += decoded
            self.passes += 1
            log.info("camera %s: end of %s, playing it again from the start (pass %d; frame %d, %.1f s of media)",
                     self.camera_id, self._where, self.passes + 1, base, base / fps)
        self._end(SourceState.FINISHED, None)

    def _file_fps(self, cap: cv2.VideoCapture) -> float:
        fps = _valid_fps(cap.get(cv2.CAP_PROP_FPS))
        if fps is None:
            log.warning("camera %s: %s reports no valid frame rate (%r); assuming %.0f fps",
                        self.camera_id, self._where, cap.get(cv2.CAP_PROP_FPS), FALLBACK_FPS)
            fps = FALLBACK_FPS
        self.fps = fps
        return fps

    def _read_file(self, cap: cv2.VideoCapture, fps: float, base: int, t0: float) -> tuple[int | None, float]:
        """One pass over an opened file, its frames numbered from ``base``: (frames decoded, or None when the reader
        stopped; the pacing origin ``t0``, moved on when it fell behind). Raises when the file is unusable."""
        stride = self.cam.frame_stride
        if self.cam.max_fps is not None:
            stride = max(stride, round(fps / self.cam.max_fps))
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        n = 0  # frames decoded in this pass
        error: str | None = None
        while not self._stop.is_set():
            index = base + n  # counts on across passes: indices and media time keep increasing
            keep = index % stride == 0
            ok, img, error = self._read(cap, keep)
            if not ok:
                break
            self._count_read()
            if index == 0:
                self._set_state(SourceState.STREAMING)
            if keep:
                media_t = index / fps
                if self.speed is not None:
                    t0 = self._pace(t0, media_t / self.speed)
                now = time.time()
                frame = Frame(self.camera_id, index, media_t + self.cam.time_offset_s, img, wall_time=now, live=False)
                if not self._put(frame):
                    break
            n += 1
        if self._stop.is_set():
            return None, t0
        if n == 0:
            raise self._fail(f"no frame could be decoded{f' ({error})' if error else ''}")
        if error is not None:
            raise self._fail(f"decoding failed after {n} frames: {error}")
        short = max(_TRUNCATION_TOLERANCE[0], _TRUNCATION_TOLERANCE[1] * declared)
        if declared > 0 and n < declared - short:
            raise self._fail(f"decoding stopped after {n} of {declared} frames (truncated or corrupt file)")
        return n, t0

    def _pace(self, t0: float, due_s: float) -> float:
        """Sleep until ``t0 + due_s`` (monotonic); returns ``t0``, moved forward if far behind schedule."""
        wait = t0 + due_s - time.monotonic()
        if wait > 0:
            self._stop.wait(wait)
        elif wait < -_MAX_PACING_LAG_S:
            t0 -= wait
        return t0

    # ------------------------------------------------------------------ streams
    def _open_stream(self) -> cv2.VideoCapture:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.cam.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(self.cam.read_timeout_s * 1000),
        ]  # fmt: skip
        with _OPTIONS_GATE.use(self.cam.rtsp_transport):
            return cv2.VideoCapture(self.cam.url, cv2.CAP_FFMPEG, params)

    def _run_stream(self) -> None:
        rc = self.cam.reconnect
        delay = rc.initial_s
        failures = 0
        while not self._stop.is_set():
            cap = self._open_stream()
            try:
                if cap.isOpened():
                    got_frame, error = self._stream_session(cap)
                else:
                    got_frame = False
                    error = "cannot open the stream (nothing answering, or no video within "
                    error += f"{self.cam.open_timeout_s:g} s)"
            finally:
                cap.release()
            if self._stop.is_set():
                return
            if got_frame:  # the connection worked for a while: start the back-off afresh
                failures, delay = 0, rc.initial_s
            failures += 1
            self.stats.last_error = f"camera '{self.camera_id}' ({self._where}): {error}"
            if rc.max_attempts and failures >= rc.max_attempts:
                raise self._fail(f"{error}; giving up after {failures} failed attempts in a row")
            self._set_state(SourceState.RECONNECTING)
            wait = delay * (1.0 + self._rng.uniform(-rc.jitter, rc.jitter))
            log.warning("camera %s: %s; reconnecting in %.2f s (attempt %d)", self.camera_id, error, wait, failures)
            delay = min(delay * rc.multiplier, rc.max_s)
            if self._stop.wait(wait):
                return
            self.stats.reconnects += 1

    def _stream_session(self, cap: cv2.VideoCapture) -> tuple[bool, str]:
        """Read an opened stream until it fails or the reader stops; (any frame read, error)."""
        self.fps = _valid_fps(cap.get(cv2.CAP_PROP_FPS))
        min_period = 1.0 / self.cam.max_fps if self.cam.max_fps else 0.0
        got_frame = False
        while not self._stop.is_set():
            index = self._stream_index  # keeps counting across reconnects: indices stay increasing
            keep = index % self.cam.frame_stride == 0
            if keep and min_period:  # throttle by wall time, without building up credit after a pause
                now_m = time.monotonic()
                keep = now_m >= self._next_due
                if keep:
                    self._next_due = max(self._next_due + min_period, now_m + min_period / 2)
            ok, img, error = self._read(cap, keep)  # frames not kept are only grabbed, never converted
            if not ok:
                return got_frame, error or f"read failed or timed out (read_timeout_s={self.cam.read_timeout_s:g})"
            self._count_read()
            self._stream_index += 1
            if not got_frame:
                got_frame = True
                self.stats.last_error = None
                self._set_state(SourceState.STREAMING)
            if keep:
                now = time.time()
                if not self._put(Frame(self.camera_id, index, now, img, wall_time=now, live=True)):
                    break
        return got_frame, "stopped"
