"""Camera readers on real decoded video and servers: file replay, live newest-wins, failures, an HTTP stream,
RTSP reconnects against a real GStreamer server."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from reidd.config import CameraConfig
from reidd.sources import CameraReader, SourceEnd, SourceState

from support import free_port, wait_until
from support.media import RtspServers, count_frames, needs_gst, read_code, write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    out = {
        "clip": write_video(d / "clip.mp4", 45, 15.0),  # 3 s
        "long": write_video(d / "long.mp4", 400, 10.0, (160, 120)),  # 40 s, small: the live companion camera
        "avi": write_video(d / "clip.avi", 40, 10.0, fourcc="MJPG"),
    }
    corrupt = d / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    out["corrupt"] = corrupt
    data = out["avi"].read_bytes()
    truncated = d / "truncated.avi"
    truncated.write_bytes(data[: len(data) // 2])  # header still says 40 frames
    out["truncated"] = truncated
    return out


def drain(reader: CameraReader, timeout: float = 20.0) -> tuple[list, SourceEnd]:
    """All frames up to the SourceEnd (bounded wait)."""
    frames = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        item = reader.get(timeout=0.5)
        if isinstance(item, SourceEnd):
            return frames, item
        if item is not None:
            frames.append(item)
    raise AssertionError(f"no SourceEnd from camera {reader.camera_id} within {timeout} s")


class StateLog:
    """Collects on_state calls."""

    def __init__(self) -> None:
        self.states: list[SourceState] = []
        self.lock = threading.Lock()

    def __call__(self, camera_id: str, state: SourceState) -> None:
        with self.lock:
            self.states.append(state)

    def wait_for(self, state: SourceState, timeout: float, after: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if state in self.states[after:]:
                    return
            time.sleep(0.05)
        raise AssertionError(f"state {state.value} not reached within {timeout} s; states: {self.states}")


@pytest.fixture
def rtsp_servers(tmp_path: Path):
    servers = RtspServers(tmp_path)
    yield servers
    servers.close()


@pytest.fixture
def readers():
    """Readers created by a test; all are stopped afterwards."""
    made: list[CameraReader] = []
    yield made
    for r in made:
        r.stop(timeout=5)


def fast_reconnect(**extra) -> dict:
    return {"initial_s": 0.2, "multiplier": 1.5, "max_s": 1.0, "jitter": 0.1, **extra}


# --------------------------------------------------------------------------- files
def test_file_replay_delivers_every_frame_in_order(videos, readers):
    reference = count_frames(videos["clip"])
    states = StateLog()
    cam = CameraConfig(id="cam-a", url=str(videos["clip"]), time_offset_s=100.0, queue_size=2)
    r = CameraReader(cam, replay=True, on_state=states)
    readers.append(r)
    r.start()
    frames, end = drain(r)
    assert end == SourceEnd("cam-a", None)
    assert r.state == SourceState.FINISHED
    assert states.states == [SourceState.CONNECTING, SourceState.STREAMING, SourceState.FINISHED]
    assert r.fps == pytest.approx(15.0)
    assert [f.index for f in frames] == list(range(len(reference)))
    assert [read_code(f.image) for f in frames] == list(range(len(reference)))
    for f, ref in zip(frames, reference):
        assert f.camera_id == "cam-a" and not f.live
        assert f.ts == pytest.approx(f.index / 15.0 + 100.0)
        assert np.array_equal(f.image, ref)
        assert f.wall_time > 0
    assert r.stats.frames_read == r.stats.frames_emitted == len(reference)
    assert r.stats.frames_dropped == 0
    assert r.get(timeout=0.05) is None  # SourceEnd is queued once


@pytest.mark.parametrize(
    ("stride", "max_fps", "expected_step"),
    [(4, None, 4), (1, 5.0, 3), (4, 5.0, 4), (1, 100.0, 1)],
)
def test_file_stride_and_max_fps(videos, readers, stride, max_fps, expected_step):
    cam = CameraConfig(id="cam-s", url=str(videos["clip"]), frame_stride=stride, max_fps=max_fps)
    r = CameraReader(cam, replay=True)
    readers.append(r)
    r.start()
    frames, end = drain(r)
    assert end.error is None
    assert [f.index for f in frames] == list(range(0, 45, expected_step))
    assert [read_code(f.image) for f in frames] == [f.index for f in frames]
    assert all(f.ts == pytest.approx(f.index / 15.0) for f in frames)
    assert r.stats.frames_read == 45
    assert r.stats.frames_emitted == len(frames)


def test_file_replay_speed_paces_by_media_time(videos, readers):
    cam = CameraConfig(id="cam-p", url=str(videos["clip"]), frame_stride=3)
    r = CameraReader(cam, replay=True, speed=2.0)
    readers.append(r)
    r.start()
    frames, end = drain(r)
    assert end.error is None
    media = frames[-1].ts - frames[0].ts  # 42 / 15 = 2.8 s
    wall = frames[-1].wall_time - frames[0].wall_time
    assert media == pytest.approx(2.8)
    assert media / 2.0 * 0.9 <= wall <= media / 2.0 + 1.0


def test_slow_consumer_in_replay_mode_loses_nothing(videos, readers):
    cam = CameraConfig(id="cam-r", url=str(videos["clip"]), queue_size=1, frame_stride=5)
    r = CameraReader(cam, replay=True)
    readers.append(r)
    r.start()
    got = []
    while True:
        time.sleep(0.03)
        item = r.get(timeout=5)
        assert item is not None
        if isinstance(item, SourceEnd):
            break
        got.append(item.index)
    assert got == list(range(0, 45, 5))
    assert r.stats.frames_dropped == 0


@pytest.mark.parametrize("which", ["missing", "corrupt"])
def test_unusable_file_fails_quickly_naming_camera_and_path(videos, readers, tmp_path, which):
    path = tmp_path / "nope.mp4" if which == "missing" else videos["corrupt"]
    states = StateLog()
    r = CameraReader(CameraConfig(id="bad-cam", url=str(path)), replay=True, on_state=states)
    readers.append(r)
    t0 = time.monotonic()
    r.start()
    frames, end = drain(r, timeout=5)
    assert time.monotonic() - t0 < 3.0
    assert frames == []
    assert end.camera_id == "bad-cam" and end.error is not None
    assert "bad-cam" in end.error and str(path) in end.error
    assert r.state == SourceState.FAILED and states.states[-1] == SourceState.FAILED
    assert r.stats.last_error == end.error


def test_truncated_file_delivers_what_it_can_then_fails(videos, readers):
    decodable = len(count_frames(videos["truncated"]))
    assert 0 < decodable < 40
    r = CameraReader(CameraConfig(id="cut", url=str(videos["truncated"])), replay=True)
    readers.append(r)
    r.start()
    frames, end = drain(r)
    assert [f.index for f in frames] == list(range(decodable))
    assert r.state == SourceState.FAILED
    assert end.error is not None and "cut" in end.error and str(videos["truncated"]) in end.error
    assert f"{decodable} of 40" in end.error


def test_live_mode_newest_frame_wins(videos, readers):
    cam = CameraConfig(id="live-file", url=str(videos["clip"]), queue_size=2)
    r = CameraReader(cam, replay=False)
    readers.append(r)
    r.start()
    received = []
    deadline = time.monotonic() + 20
    end = None
    while end is None and time.monotonic() < deadline:
        time.sleep(0.35)  # slower than the 15 fps source
        item = r.get(timeout=2)
        if isinstance(item, SourceEnd):
            end = item
        elif item is not None:
            lag = r.stats.frames_read - 1 - item.index  # frames decoded after this one
            assert lag <= cam.queue_size + 3, f"frame {item.index} is stale ({lag} newer frames decoded)"
            received.append(item)
    assert end is not None and end.error is None
    idx = [f.index for f in received]
    assert idx == sorted(set(idx)) and len(idx) < 45
    assert [read_code(f.image) for f in received] == idx
    assert r.stats.frames_dropped > 0
    assert r.stats.frames_emitted == len(received) + r.stats.frames_dropped
    # paced at native speed: 45 frames at 15 fps take about 3 s
    assert received[-1].wall_time - received[0].wall_time >= 1.5


# --------------------------------------------------------------------------- stop
def test_stop_while_blocked_on_full_queue_returns_promptly(videos, readers):
    r = CameraReader(CameraConfig(id="blocked", url=str(videos["clip"]), queue_size=1), replay=True)
    readers.append(r)
    r.start()
    deadline = time.monotonic() + 10
    while r.stats.frames_read < 2 and time.monotonic() < deadline:  # frame 0 queued, frame 1 waits
        time.sleep(0.02)
    time.sleep(0.2)
    assert r.stats.frames_emitted == 1 and r.alive
    t0 = time.monotonic()
    r.stop(timeout=5)
    assert time.monotonic() - t0 < 1.0
    assert not r.alive
    assert r.state == SourceState.STOPPED
    first = r.get(timeout=1)
    assert first is not None and not isinstance(first, SourceEnd) and first.index == 0
    assert r.get(timeout=1) == SourceEnd("blocked", None)
    assert r.get(timeout=0.1) is None
    r.stop()  # idempotent


def test_stop_while_stream_open_hangs_returns_promptly(readers):
    """A server that accepts TCP but never answers RTSP: the native open blocks; stop() must not."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    try:
        cam = CameraConfig(id="mute", url=f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=30, read_timeout_s=30)
        r = CameraReader(cam, replay=False)
        readers.append(r)
        r.start()
        time.sleep(0.5)
        assert r.alive and r.stats.frames_read == 0
        t0 = time.monotonic()
        r.stop(timeout=0.5)
        assert time.monotonic() - t0 < 1.5
        assert r.state == SourceState.STOPPED
        assert r.get(timeout=0.5) == SourceEnd("mute", None)
    finally:
        listener.close()  # resets the pending connection: the native open returns
    deadline = time.monotonic() + 10
    while r.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not r.alive
    assert r.state == SourceState.STOPPED
    assert r.get(timeout=0.2) is None  # nothing queued after the SourceEnd


# --------------------------------------------------------------------------- streams
def test_max_attempts_on_dead_url_ends_failed(readers, monkeypatch):
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;udp|max_delay;500000")
    port = free_port()
    url = f"rtsp://viewer:secret@127.0.0.1:{port}/cam"
    states = StateLog()
    cam = CameraConfig(id="dead", url=url, open_timeout_s=2, reconnect=fast_reconnect(max_attempts=3))
    r = CameraReader(cam, replay=False, on_state=states)
    readers.append(r)
    t0 = time.monotonic()
    r.start()
    frames, end = drain(r, timeout=15)
    assert frames == []
    assert time.monotonic() - t0 < 6
    assert r.state == SourceState.FAILED
    assert states.states == [SourceState.CONNECTING, SourceState.RECONNECTING, SourceState.FAILED]
    assert r.stats.reconnects == 2  # 3 attempts: the first open and 2 reopens
    assert end.error is not None and "dead" in end.error and "3 failed attempts" in end.error
    assert f"rtsp://viewer:***@127.0.0.1:{port}/cam" in end.error and "secret" not in end.error
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp|max_delay;500000"  # restored


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_http_stream_is_read_and_reopened_at_its_end(videos, readers):
    """An HTTP source is a live stream: frames are wall-clock stamped and its end is a failure to recover from."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(videos["avi"].parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{videos['avi'].name}"
        states = StateLog()
        cam = CameraConfig(id="http-cam", url=url, queue_size=64, reconnect=fast_reconnect(), read_timeout_s=2)
        r = CameraReader(cam, replay=False, on_state=states)
        readers.append(r)
        r.start()
        frames = []
        deadline = time.monotonic() + 20
        while len(frames) < 60 and time.monotonic() < deadline:  # the file has 40 frames
            item = r.get(timeout=0.5)
            assert not isinstance(item, SourceEnd), item
            if item is not None:
                frames.append(item)
        r.stop()
    finally:
        server.shutdown()
        server.server_close()
    assert len(frames) >= 60
    assert r.stats.reconnects >= 1
    assert states.states[:3] == [SourceState.CONNECTING, SourceState.STREAMING, SourceState.RECONNECTING]
    idx = [f.index for f in frames]
    assert idx == list(range(idx[0], idx[0] + len(idx)))  # the index keeps counting across the reopen
    codes = [read_code(f.image) for f in frames]
    assert codes[:40] == list(range(40)) and codes[40:] == list(range(len(codes) - 40))
    assert all(f.live and f.ts == f.wall_time for f in frames)


class Collector(threading.Thread):
    """Pulls frames from a reader as fast as they come, recording arrival times."""

    def __init__(self, reader: CameraReader):
        super().__init__(daemon=True)
        self.reader = reader
        self.arrivals: list[tuple[float, int]] = []
        self.live_flags: set[bool] = set()
        self.max_ts_minus_wall = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            item = self.reader.get(timeout=0.1)
            if isinstance(item, SourceEnd):
                return
            if item is not None:
                self.live_flags.add(item.live)
                if item.live:
                    self.max_ts_minus_wall = max(self.max_ts_minus_wall, abs(item.ts - item.wall_time))
                self.arrivals.append((time.monotonic(), item.index))

    def count_after(self, t: float) -> int:
        return sum(1 for a, _ in list(self.arrivals) if a > t)


@needs_gst
def test_rtsp_reconnects_after_server_restart_without_stalling_other_cameras(videos, rtsp_servers, readers):
    port = free_port()
    server = rtsp_servers.start(videos["clip"], port)
    states = StateLog()
    rtsp_cam = CameraConfig(
        id="rtsp-1", url=f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=5, read_timeout_s=2,
        reconnect=fast_reconnect(), queue_size=8,
    )  # fmt: skip
    rtsp = CameraReader(rtsp_cam, replay=False, on_state=states, seed=1)
    other = CameraReader(CameraConfig(id="file-live", url=str(videos["long"])), replay=False)
    # a camera whose server accepts TCP and never answers: its native open blocks for the whole test
    mute_listener = socket.socket()
    mute_listener.bind(("127.0.0.1", 0))
    mute_listener.listen(4)
    mute_cam = CameraConfig(id="mute", url=f"rtsp://127.0.0.1:{mute_listener.getsockname()[1]}/cam", open_timeout_s=60)
    mute = CameraReader(mute_cam, replay=False)
    readers.extend([rtsp, other, mute])
    c_rtsp, c_other = Collector(rtsp), Collector(other)
    try:
        mute.start()
        time.sleep(0.3)
        rtsp.start()
        other.start()
        c_rtsp.start()
        c_other.start()
        states.wait_for(SourceState.STREAMING, timeout=20)
        wait_until(lambda: len(c_rtsp.arrivals) >= 10, 20, "10 RTSP frames")
        assert rtsp.fps == pytest.approx(15.0, rel=0.1)

        n_before = len(states.states)
        t_kill = time.monotonic()
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=5)
        states.wait_for(SourceState.RECONNECTING, timeout=10, after=n_before)
        time.sleep(1.5)  # the camera stays down for a while: several failed reopen attempts
        assert rtsp.state == SourceState.RECONNECTING
        assert rtsp.stats.last_error is not None and "rtsp-1" in rtsp.stats.last_error

        rtsp_servers.start(videos["clip"], port)
        n_down = len(states.states)
        states.wait_for(SourceState.STREAMING, timeout=20, after=n_down)
        t_back = time.monotonic()
        wait_until(lambda: c_rtsp.count_after(t_back) >= 5, 15, "RTSP frames after the restart")
        t_end = time.monotonic()
        assert mute.alive and mute.state == SourceState.CONNECTING and mute.stats.frames_read == 0
    finally:
        c_rtsp.done.set()
        c_other.done.set()
        mute.stop(timeout=0.1)
        mute_listener.close()
    c_rtsp.join(timeout=5)
    c_other.join(timeout=5)

    assert rtsp.stats.reconnects >= 1
    assert rtsp.stats.last_error is None  # cleared once streaming again
    assert states.states[:2] == [SourceState.CONNECTING, SourceState.STREAMING]
    assert SourceState.RECONNECTING in states.states
    assert states.states[-1] == SourceState.STREAMING
    rtsp_idx = [i for _, i in c_rtsp.arrivals]
    assert rtsp_idx == sorted(set(rtsp_idx))  # indices keep increasing across the reconnect
    assert c_rtsp.live_flags == {True} and c_other.live_flags == {False}
    assert c_rtsp.max_ts_minus_wall == 0.0  # live frames are stamped with the wall clock

    # the file camera kept delivering all along: no hole longer than ~1 s during the outage
    times = [a for a, _ in c_other.arrivals if t_kill - 1.0 <= a <= t_end]
    assert len(times) >= 5
    gaps = np.diff([t_kill - 1.0, *times, t_end])
    assert gaps.max() < 1.0, f"file camera stalled for {gaps.max():.2f} s during the RTSP outage"
    assert other.state == SourceState.STREAMING


@needs_gst
def test_rtsp_max_fps_throttles_by_wall_time(videos, rtsp_servers, readers):
    port = free_port()
    rtsp_servers.start(videos["clip"], port)
    states = StateLog()
    cam = CameraConfig(id="rtsp-slow", url=f"rtsp://127.0.0.1:{port}/cam", max_fps=5, queue_size=64)
    r = CameraReader(cam, replay=False, on_state=states)
    readers.append(r)
    r.start()
    states.wait_for(SourceState.STREAMING, timeout=20)
    frames = []
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        item = r.get(timeout=0.2)
        assert not isinstance(item, SourceEnd), item
        if item is not None:
            frames.append(item)
    r.stop()
    read_s = r.stats.last_frame_wall - frames[0].wall_time
    assert r.stats.frames_read >= 30  # the 15 fps stream was decoded in full...
    assert r.stats.frames_emitted <= 5 * read_s + 2  # ...but at most 5 frames per second came out
    assert len(frames) >= 10
    gaps = np.diff([f.wall_time for f in frames])
    assert np.median(gaps) >= 0.15
    assert r.stats.frames_dropped == 0
