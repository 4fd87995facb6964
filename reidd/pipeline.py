"""Wiring: camera readers -> batched detector -> per-camera tracker -> tracklet builder -> tracklet sinks.

Replay (recorded files) is deterministic: frames are merged across cameras strictly by
``(timestamp, camera order)``, every frame is processed, and batches are formed from that order
only, so the same input gives the same tracklets whatever the machine's speed.
Live: each loop takes what the readers have (newest frame wins inside a reader), so a slow or
dead camera never holds the others back.

Closed tracklets go to every sink (a callable taking a list of tracklets); the re-ID stage and
the replay writers are sinks.

Threads: each camera decodes in its reader thread; detection runs on one detection thread, a batch
ahead of the loop that tracks, builds tracklets and calls the sinks, so inference overlaps with
that work (``detect_ahead``). Batches are tracked in order, so the overlap changes no result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from reidd.config import Config
from reidd.context import RunContext
from reidd.detect import Detector, build_detector, filter_roi
from reidd.sources import CameraReader, SourceEnd, SourceState
from reidd.sources.identity import recording_tag
from reidd.telemetry import Metrics
from reidd.track import CameraTracker, TrackletBuilder
from reidd.types import CameraProgress, Frame, Progress, Tracklet

log = logging.getLogger("reidd.pipeline")

TrackletSink = Callable[[list[Tracklet]], None]

#: Live overload: a camera is "dropping" once this share of its frames was dropped over the last DROP_WINDOW_S
#: seconds (its reader's queue full: the pipeline slower than the camera), and stops when the share falls below
#: DROP_CLEAR_SHARE. Entering is logged once as a WARNING and shown by /readyz; leaving is logged with a summary.
DROP_WINDOW_S = 10.0
DROP_WARN_SHARE = 0.05
DROP_CLEAR_SHARE = 0.01


@dataclass
class _DropWatch:
    """One camera's recent (time, frames queued, frames dropped) samples and whether it is dropping now."""

    samples: deque = field(default_factory=deque)
    dropping: bool = False
    since: float = 0.0  # monotonic time it started dropping
    dropped_at_start: int = 0
    share: float = 0.0  # dropped / queued over the window, at the last sample
    window_dropped: int = 0
    window_queued: int = 0
    ended: bool = False  # the camera's reader ended: nothing more to watch


@dataclass
class CameraSummary:
    camera_id: str
    frames: int = 0
    tracklets: int = 0
    dropped_short: int = 0
    dropped_pedestrians: int = 0  # lone-person tracks too slow for a rider (detector.riders)
    dropped_static: int = 0  # static, low-confidence tracks (tracklets.static_min_conf)
    dropped_motion: int = 0  # tracks of detector.motion_assist's blobs alone
    state: str = "connecting"
    error: str | None = None
    frames_dropped: int = 0  # live: frames the reader discarded because the pipeline was behind (oldest first)


@dataclass
class PipelineResult:
    cameras: dict[str, CameraSummary]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    stopped: bool = False

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.cameras.values())

    @property
    def failed(self) -> list[str]:
        return [c.camera_id for c in self.cameras.values() if c.error]


def _recording_tag(path: str) -> str:
    """The recording tag of a file camera ("" when the file cannot be read: opening it reports that)."""
    try:
        return recording_tag(path)
    except OSError:
        return ""


class Pipeline:
    """Runs the enabled cameras of a config until every source ends or :meth:`stop` is called."""

    def __init__(
        self,
        cfg: Config,
        context: RunContext,
        *,
        speed: float | None = None,
        metrics: Metrics | None = None,
        detector: Detector | None = None,
        sinks: Sequence[TrackletSink] = (),
        on_tick: Sequence[Callable[[float, Progress], None]] = (),
        restart_failed_after_s: float = 30.0,
        detect_ahead: bool = True,
    ):
        self.cfg = cfg
        self.context = context
        self.replay = context.replay
        self.speed = speed
        self.metrics = metrics or Metrics()
        self.detector = detector or build_detector(cfg.detector, [c.id for c in cfg.cameras if c.enabled])
        self.sinks = list(sinks)
        self.on_tick = list(on_tick)
        self._clock_ts: float | None = None  # latest frame time processed (the stage clock)
        self._clock_mono = time.monotonic()
        self.restart_failed_after_s = restart_failed_after_s
        self.cams = [c for c in cfg.cameras if c.enabled]
        self._roi = {c.id: c.roi for c in self.cams}
        self.order = {c.id: i for i, c in enumerate(self.cams)}
        self.readers: dict[str, CameraReader] = {}
        self.trackers = {c.id: CameraTracker(cfg.tracker) for c in self.cams}
        # tracklet ids carry a tag: live sources this run's (its start, base 36), since the tracker counts from 1
        # again after a restart; files their recording's (reidd.sources.identity: the same file gives the same
        # ids at every run, so a restart repeats its events, and two recordings of one camera never share ids)
        session = np.base_repr(int(time.time()), 36).lower() if not self.replay else ""
        self.builders = {c.id: TrackletBuilder(c.id, cfg.tracklets, session if c.is_live else _recording_tag(c.url))
                         for c in self.cams}
        self.summary = {c.id: CameraSummary(c.id) for c in self.cams}
        self._finished: set[str] = set()  # cameras whose source ended (and is not restarting)
        self.stage_seconds: dict[str, float] = {"detect": 0.0, "track": 0.0, "tracklets": 0.0, "sinks": 0.0}
        self._stop = threading.Event()
        self._drops: dict[str, _DropWatch] = {}
        self._dropped_before: dict[str, int] = {}
        self._dropping: dict[str, dict] = {}  # cameras dropping now (read by readiness from other threads)
        self._restart_at: dict[str, float] = {}
        self._restart_delay: dict[str, float] = {}
        # one detection thread: a batch is detected while the one before it is tracked (see _process)
        self.detect_ahead = detect_ahead
        self._detect_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reidd-detect")
        self._pending: tuple[list[Frame], Future] | None = None
        self._prepare_metrics()
        self.metrics.model_loaded.set(1.0)

    # ------------------------------------------------------------------ metrics
    def _prepare_metrics(self) -> None:
        """Create this run's label sets up front and register the queue-depth collector (the re-ID runtime
        registers its own for the gallery and the matcher)."""
        m = self.metrics
        reid = self.cfg.reid.enabled
        ids = [c.id for c in self.cams]
        pairs: set[tuple[str, str]] = set()
        if reid:
            for link in self.cfg.matching.topology:  # (query camera, gallery camera)
                pairs.add((link.dst, link.src))
                if link.bidirectional:
                    pairs.add((link.src, link.dst))
        m.prepare(ids, stages=tuple(self.stage_seconds) + (("embed",) if reid else ()),
                  match_pairs=sorted(p for p in pairs if p[0] in self.order), reid=reid)
        self._queue_collector = f"pipeline-{id(self)}-queues"
        m.add_collector(self._queue_collector, self._collect_queue_depths)

    def _collect_queue_depths(self) -> None:
        for cam_id, reader in list(self.readers.items()):
            self.metrics.queue_depth.labels(camera=cam_id).set(reader.queue_depth)
            # every scrape sees the readers' own counts: reidd_frames_read_total never trails processed
            self._export_reader_counts(cam_id, reader)

    def _export_reader_counts(self, cam_id: str, reader: CameraReader) -> None:
        """Bring read, dropped and reconnect counters up to the reader's stats (any thread; export_total locks).

        Each reader is its own source, so a restarted camera's fresh counts add on."""
        st, m, source = reader.stats, self.metrics, f"reader-{id(reader)}"
        m.export_total(m.frames_read, source, st.frames_read, camera=cam_id)
        m.export_total(m.frames_dropped, source, st.frames_dropped, camera=cam_id)
        m.export_total(m.source_reconnects, source, st.reconnects, camera=cam_id)

    def _sync_metrics(self) -> None:
        for cam_id in self.order:
            self._sync_source_metrics(cam_id)
        self.metrics.refresh()

    # ------------------------------------------------------------------ lifecycle
    def stop(self) -> None:
        """Ask the run loop to finish: readers stop, open tracklets are flushed to the sinks."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _on_state(self, camera_id: str, state: SourceState) -> None:
        value = state.value if hasattr(state, "value") else str(state)
        self.summary[camera_id].state = value
        self.metrics.set_source_state(camera_id, value)
        log.info("camera %s: %s", camera_id, value)

    def _start_reader(self, cam_id: str) -> CameraReader:
        cam = self.cfg.camera(cam_id)
        reader = CameraReader(cam, replay=self.replay, speed=self.speed, on_state=self._on_state,
                              seed=self.order[cam_id])
        old = self.readers.get(cam_id)
        if old is not None:  # a restart: the new reader counts its drops from 0
            self._dropped_before[cam_id] = self._dropped_before.get(cam_id, 0) + old.stats.frames_dropped
        self.readers[cam_id] = reader
        self._finished.discard(cam_id)
        self._drops[cam_id] = _DropWatch()
        self._dropping.pop(cam_id, None)
        reader.start()
        return reader

    def run(self) -> PipelineResult:
        t0 = time.perf_counter()
        for cam in self.cams:
            self._on_state(cam.id, SourceState.CONNECTING)
            self._start_reader(cam.id)
        try:
            if self.replay:
                self._run_replay()
            else:
                self._run_live()
        finally:
            for r in self.readers.values():
                r.stop()
            try:
                self._emit_all_open("end")
            finally:
                self._detect_pool.shutdown(wait=True, cancel_futures=True)
                self._sync_metrics()
                self._log_drop_totals()
                self.metrics.remove_collector(self._queue_collector)  # do not keep readers (and frames) alive
        return PipelineResult(
            {k: v for k, v in self.summary.items()},
            dict(self.stage_seconds),
            time.perf_counter() - t0,
            self._stop.is_set(),
        )

    # ------------------------------------------------------------------ replay: deterministic merge
    def _next_item(self, cam_id: str) -> Frame | SourceEnd | None:
        reader = self.readers[cam_id]
        while not self._stop.is_set():
            item = reader.get(timeout=0.2)
            if item is not None:
                return item
        return None

    def _run_replay(self) -> None:
        heads: dict[str, Frame] = {}
        for cam_id in self.order:
            item = self._next_item(cam_id)
            if isinstance(item, Frame):
                heads[cam_id] = item
            elif isinstance(item, SourceEnd):
                self._camera_ended(item)
        last_sync = time.monotonic()
        while heads and not self._stop.is_set():
            batch: list[Frame] = []
            while heads and len(batch) < self.cfg.detector.max_batch:
                cam_id = min(heads, key=lambda c: (heads[c].ts, self.order[c]))
                batch.append(heads.pop(cam_id))
                item = self._next_item(cam_id)
                if isinstance(item, Frame):
                    heads[cam_id] = item
                elif isinstance(item, SourceEnd):
                    self._process(batch)  # the camera's last frames before its tracklets are flushed
                    batch = []
                    self._camera_ended(item)
            if batch:
                self._process(batch)
            if time.monotonic() - last_sync > 0.5:
                self._sync_metrics()
                last_sync = time.monotonic()

    # ------------------------------------------------------------------ live: take what is there
    def _run_live(self) -> None:
        active = set(self.order)
        last_sync = time.monotonic()
        while not self._stop.is_set() and (active or self._restart_at):
            batch: list[Frame] = []
            for cam_id in sorted(active, key=self.order.__getitem__):
                item = self.readers[cam_id].get(timeout=0)
                if isinstance(item, Frame):
                    batch.append(item)
                elif isinstance(item, SourceEnd):
                    active.discard(cam_id)
                    self._camera_ended(item)
                    if item.error and self.cfg.camera(cam_id).is_live and self.restart_failed_after_s > 0:
                        delay = self._restart_delay.get(cam_id, self.restart_failed_after_s)
                        self._restart_at[cam_id] = time.monotonic() + delay
                        self._restart_delay[cam_id] = min(delay * 2, 600.0)
                        log.warning("camera %s failed (%s); watchdog restarts it in %.0f s", cam_id, item.error, delay)
            for cam_id, at in list(self._restart_at.items()):
                if time.monotonic() >= at:
                    del self._restart_at[cam_id]
                    self.readers[cam_id].stop()
                    self._start_reader(cam_id)
                    self.summary[cam_id].error = None
                    active.add(cam_id)
            if batch:
                self._process(batch)
            else:
                self._finish_pending()  # nothing new to detect: do not hold the last batch back
                self._stop.wait(0.005)
            if time.monotonic() - last_sync > 0.5:
                self._sync_metrics()
                last_sync = time.monotonic()
                if not batch and self._clock_ts is not None:
                    # no frames: let time move on (with wall time) so pending decisions still happen
                    self._tick(self._clock_ts + (time.monotonic() - self._clock_mono), advance=False)

    # ------------------------------------------------------------------ stages
    def _process(self, batch: list[Frame]) -> None:
        """Hand ``batch`` to the detection thread, then track the batch handed over before it.

        Detection of one batch overlaps with tracking, tracklet building and the sinks of the previous
        one. Batches are still tracked one at a time and in order, so results do not depend on timing."""
        if not batch:
            return
        if not self.detect_ahead:
            self._pending = (batch, self._detect_pool.submit(self._detect, batch))
            self._finish_pending()
            return
        future = self._detect_pool.submit(self._detect, batch)
        self._finish_pending()
        self._pending = (batch, future)

    def _detect(self, batch: list[Frame]) -> list:
        """The detection thread's job."""
        m = self.metrics
        t = time.perf_counter()
        dets = self.detector.detect(batch)
        dt = time.perf_counter() - t
        self.stage_seconds["detect"] += dt
        m.detector_latency.observe(dt)
        m.detector_batch.observe(len(batch))
        m.stage_seconds.labels(stage="detect").observe(dt)
        return dets

    def _finish_pending(self) -> None:
        """Track the batch whose detections are in flight (waits for them); re-raises a detector error."""
        if self._pending is None:
            return
        batch, future = self._pending
        self._pending = None
        dets = future.result()
        m = self.metrics
        for cam_id in {f.camera_id for f in batch}:  # read is exported before processed grows: never behind it
            reader = self.readers.get(cam_id)
            if reader is not None:
                self._export_reader_counts(cam_id, reader)
        closed: list[Tracklet] = []
        track_s = tracklets_s = 0.0
        for frame, d in zip(batch, dets):
            cam_id = frame.camera_id
            t = time.perf_counter()
            d = filter_roi(d, self._roi[cam_id])
            tracks = self.trackers[cam_id].update(d, frame.image)
            t2 = time.perf_counter()
            closed += self.builders[cam_id].update(frame, tracks)
            t3 = time.perf_counter()
            track_s += t2 - t
            tracklets_s += t3 - t2
            self.summary[cam_id].frames += 1
            m.frames_processed.labels(camera=cam_id).inc()
            m.active_tracks.labels(camera=cam_id).set(self.trackers[cam_id].active_count())
            m.open_tracklets.labels(camera=cam_id).set(self.builders[cam_id].open_count)
        self.stage_seconds["track"] += track_s
        self.stage_seconds["tracklets"] += tracklets_s
        m.stage_seconds.labels(stage="track").observe(track_s)  # per detector batch, like "detect"
        m.stage_seconds.labels(stage="tracklets").observe(tracklets_s)
        self._emit(closed)
        self._tick(max(f.ts for f in batch))

    def _tick(self, ts: float, advance: bool = True) -> None:
        """Run the tick hooks at ``ts``; with ``advance`` also move the pipeline clock to it."""
        if advance:
            self._clock_ts = ts if self._clock_ts is None else max(self._clock_ts, ts)
            self._clock_mono = time.monotonic()
            ts = self._clock_ts
        progress = self.progress()
        for fn in self.on_tick:
            fn(ts, progress)

    def progress(self) -> Progress:
        """Each camera's :class:`~reidd.types.CameraProgress` (cameras with no frame yet are left out)."""
        out: Progress = {}
        for cam_id, b in self.builders.items():
            if cam_id in self._finished:
                out[cam_id] = CameraProgress(float("inf"))
            elif b.last_ts is not None:
                out[cam_id] = CameraProgress(b.last_ts, tuple(b.open_spans()))
        return out

    def _camera_ended(self, end: SourceEnd) -> None:
        self._finish_pending()  # the camera's last frames are tracked before its tracklets are flushed
        self._finished.add(end.camera_id)  # until a restart: no tracklet of it can come in between
        s = self.summary[end.camera_id]
        if end.error:
            s.error = end.error
            log.error("camera %s: %s", end.camera_id, end.error)
        self._sync_source_metrics(end.camera_id)
        w = self._drops.setdefault(end.camera_id, _DropWatch())
        w.ended = True  # an ended camera drops nothing more
        if w.dropping:
            w.dropping = False
            log.info("camera %s: ended while dropping frames (%d dropped over %.0f s)", end.camera_id,
                     self.summary[end.camera_id].frames_dropped - w.dropped_at_start, time.monotonic() - w.since)
        self._dropping.pop(end.camera_id, None)
        self._emit(self.builders[end.camera_id].flush("end"))

    def _emit_all_open(self, reason: str) -> None:
        self._finish_pending()
        closed: list[Tracklet] = []
        for cam_id in self.order:
            closed += self.builders[cam_id].flush(reason)
        self._emit(closed)

    def _emit(self, tracklets: list[Tracklet]) -> None:
        for cam_id, b in self.builders.items():
            s = self.summary[cam_id]
            for reason, attr in (("short", "dropped_short"), ("pedestrian", "dropped_pedestrians"),
                                 ("static", "dropped_static"), ("motion", "dropped_motion")):
                new_drops = getattr(b, attr) - getattr(s, attr)
                if new_drops:
                    self.metrics.tracklets_dropped.labels(camera=cam_id, reason=reason).inc(new_drops)
                    setattr(s, attr, getattr(b, attr))
        if not tracklets:
            return
        for tl in tracklets:
            self.summary[tl.camera_id].tracklets += 1
            self.metrics.tracklets_closed.labels(camera=tl.camera_id, reason=tl.reason).inc()
        t = time.perf_counter()
        for sink in self.sinks:
            sink(tracklets)
        dt = time.perf_counter() - t
        self.stage_seconds["sinks"] += dt
        self.metrics.stage_seconds.labels(stage="sinks").observe(dt)

    def _sync_source_metrics(self, cam_id: str) -> None:
        reader = self.readers.get(cam_id)
        if reader is None:
            return
        st = reader.stats
        self._export_reader_counts(cam_id, reader)
        if st.last_frame_wall:
            self.metrics.source_last_frame.labels(camera=cam_id).set(st.last_frame_wall)
        if not self.replay:
            self._watch_drops(cam_id, reader)

    # ------------------------------------------------------------------ live overload
    def dropping(self) -> dict[str, dict]:
        """Cameras dropping frames now (see DROP_WARN_SHARE): camera id -> ``dropped_percent`` (share of the
        frames queued over the last ``window_s`` seconds), ``dropped`` and ``queued`` in that window, and
        ``dropped_total`` for this run. Safe to call from any thread (readiness)."""
        return dict(self._dropping)

    def _watch_drops(self, cam_id: str, reader: CameraReader) -> None:
        """Sample a live camera's queued and dropped frames; log when it starts and stops dropping (pipeline thread)."""
        w = self._drops.setdefault(cam_id, _DropWatch())
        st = reader.stats
        self.summary[cam_id].frames_dropped = self._dropped_total(cam_id, st.frames_dropped)
        if w.ended:
            return
        now = time.monotonic()
        w.samples.append((now, st.frames_emitted, st.frames_dropped))
        while len(w.samples) > 2 and w.samples[1][0] <= now - DROP_WINDOW_S:
            w.samples.popleft()  # keep one sample at or before the window's start as its baseline
        t0, queued0, dropped0 = w.samples[0]
        w.window_queued, w.window_dropped = st.frames_emitted - queued0, st.frames_dropped - dropped0
        w.share = w.window_dropped / w.window_queued if w.window_queued > 0 else 0.0
        if not w.dropping and w.share >= DROP_WARN_SHARE and w.window_dropped >= 2:
            w.dropping, w.since, w.dropped_at_start = True, now, st.frames_dropped - w.window_dropped
            log.warning("camera %s: dropping %.0f%% of its frames (%d of %d in the last %.0f s): the pipeline is "
                        "slower than the cameras; the oldest queued frames are dropped, the newest kept "
                        "(reidd_frames_dropped_total; see docs/operations.md, GPU sizing)",
                        cam_id, 100 * w.share, w.window_dropped, w.window_queued, now - t0)
        elif w.dropping and w.share < DROP_CLEAR_SHARE:
            w.dropping = False
            log.info("camera %s: no longer dropping frames (%d dropped over %.0f s)",
                     cam_id, st.frames_dropped - w.dropped_at_start, now - w.since)
        if w.dropping:
            self._dropping[cam_id] = {
                "dropped_percent": round(100 * w.share, 1), "dropped": w.window_dropped, "queued": w.window_queued,
                "window_s": round(min(DROP_WINDOW_S, now - t0), 1),
                "dropped_total": self.summary[cam_id].frames_dropped,
            }
        else:
            self._dropping.pop(cam_id, None)

    def _dropped_total(self, cam_id: str, current: int) -> int:
        """Frames dropped in this run by the camera's readers (a restarted reader counts from 0 again)."""
        return self._dropped_before.get(cam_id, 0) + current

    def _log_drop_totals(self) -> None:
        """At the end of a live run: one line per camera that dropped frames (the run's summary)."""
        if self.replay:
            return
        for cam_id, s in self.summary.items():
            if s.frames_dropped:
                queued = s.frames + s.frames_dropped
                log.info("camera %s: %d of %d frames dropped in this run (%.0f%%): the pipeline was slower than "
                         "the camera", cam_id, s.frames_dropped, queued, 100 * s.frames_dropped / queued)

