"""The re-ID stage: a tracklet sink that embeds, matches across cameras and publishes events.

Replay: one worker thread takes the pipeline's closed tracklets and ticks from a bounded queue, in
the order the pipeline produced them: it embeds each list of tracklets as one batch, hands it to the
matcher and runs each tick (``tick(now_ts)`` after every processed batch, media time) only after the
tracklets before it. Decisions depend only on that order, so the outcome depends only on the input,
while detection and tracking of the next frames go on beside the embedding.
Live: a :class:`~reidd.reid.embedder.BatchingEmbedder` thread batches crops from all cameras;
decisions are driven by wall-clock ticks. Either way every closed tracklet becomes one
``tracklet`` event (with its global id) and every accepted match one ``match`` event.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import redis

from reidd.config import Config
from reidd.context import RunContext
from reidd.events.schema import match_event, tracklet_event
from reidd.match.matcher import Decision, Matcher
from reidd.match.recording import EmbeddingLog
from reidd.reid.embedder import BatchingEmbedder, Embedder
from reidd.telemetry import Metrics
from reidd.types import CameraProgress, Event, Progress, Tracklet, TrackletEmbedding

log = logging.getLogger("reidd.stage")

#: replay: closed-tracklet lists and ticks waiting for the re-ID worker (the pipeline waits beyond this)
REPLAY_QUEUE = 256


def box_summary(t: Tracklet) -> dict[str, Any]:
    """Small JSON summary of a tracklet's boxes (first, last, largest; rounded pixels)."""
    areas = [(b.xyxy[2] - b.xyxy[0]) * (b.xyxy[3] - b.xyxy[1]) for b in t.boxes]
    big = max(range(len(areas)), key=areas.__getitem__)

    def r(b: tuple[float, float, float, float]) -> list[float]:
        return [round(float(v), 1) for v in b]

    return {"first": r(t.boxes[0].xyxy), "last": r(t.boxes[-1].xyxy), "largest": r(t.boxes[big].xyxy),
            "largest_frame": t.boxes[big].frame, "mean_conf": round(sum(b.conf for b in t.boxes) / len(t.boxes), 4)}


class CropStore:
    """Saves each tracklet's best crop as JPEG; keeps at most ``max_files`` (oldest deleted).

    With ``relative_to`` the returned reference is relative to that folder (replay: to OUT, so that
    events do not depend on where the output folder is).
    """

    def __init__(self, directory: str | Path, max_files: int = 100_000, relative_to: str | Path | None = None):
        self.dir = Path(directory)
        self.relative_to = Path(relative_to) if relative_to is not None else None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_files = max_files
        self._files: deque[Path] = deque(sorted(self.dir.glob("*.jpg"), key=lambda p: p.stat().st_mtime))

    def save(self, t: Tracklet) -> str | None:
        if not t.crops:
            return None
        path = self.dir / f"{t.tracklet_id.replace(':', '_')}.jpg"
        cv2.imwrite(str(path), t.crops[0].image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        self._files.append(path)
        while len(self._files) > self.max_files:
            self._files.popleft().unlink(missing_ok=True)
        return str(path.relative_to(self.relative_to) if self.relative_to else path)


class ReidStage:
    """Tracklet sink + ``tick`` hook wiring embedder, matcher, gallery and event sinks.

    ``on_assigned(tracklet, global_id)`` is called once per tracklet when its global id is decided.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        embedder: Embedder | None,
        matcher: Matcher,
        publish: Callable[[Event], None],
        metrics: Metrics,
        daemon_id: str,
        context: RunContext,
        crops: CropStore | None = None,
        on_assigned: Callable[[Tracklet, int], None] | None = None,
        recorder: EmbeddingLog | None = None,
    ):
        self.cfg = cfg
        self.embedder = embedder
        self.matcher = matcher
        self.publish = publish
        self.metrics = metrics
        self.daemon_id = daemon_id
        self.context = context
        self.live = context.live
        self.crops = crops
        self.on_assigned = on_assigned
        self.recorder = recorder  # replay: the embedded tracklets and ticks, for rematch
        self._lock = threading.Lock()
        self._crop_paths: dict[str, str | None] = {}
        self._no_crops: list[tuple[float, int, Tracklet]] = []  # tracklets without crops, decided like the rest
        self._not_embedded: dict[str, str] = {}  # tracklet id -> why its embedding failed (live), for its event
        self._in_flight: dict[str, tuple[str, float, float]] = {}  # live: id -> (camera, first_ts, last_ts) embedding
        self._seq = 0
        self.tracklets = 0
        self.matches = 0
        self._batcher = BatchingEmbedder(embedder, self.submit_embedded).start() if context.live else None
        # replay: the ordered worker (started on first use; ``rematch`` calls submit_embedded/tick itself)
        self._jobs: queue.Queue[tuple[str, Any] | None] = queue.Queue(maxsize=REPLAY_QUEUE)
        self._worker: threading.Thread | None = None
        self._worker_error: BaseException | None = None
        self._abort = False
        self.worker_seconds = 0.0  # replay: time the worker spent embedding, matching and deciding

    # ------------------------------------------------------------------ sink side
    def __call__(self, tracklets: list[Tracklet]) -> None:
        if self._batcher is not None:
            self._save_crops(tracklets)
            with self._lock:
                for t in tracklets:
                    self._in_flight[t.tracklet_id] = (t.camera_id, t.first_ts, t.last_ts)
            self._batcher.submit(tracklets)
        else:
            self._enqueue("embed", tracklets)

    def on_tick(self, now_ts: float, progress: Progress | None = None) -> None:
        """The pipeline's tick hook: live, decide now; replay, after the tracklets handed over before it.
        ``progress``: how far each camera's tracklets have reached this stage (early decisions)."""
        if self._batcher is not None:
            self.tick(now_ts, progress)
        else:
            self._enqueue("tick", (now_ts, progress))

    def _with_in_flight(self, progress: Progress) -> Progress:
        """Live: tracklets handed over but still being embedded count as not handed over yet."""
        if not self._in_flight:
            return progress
        extra: dict[str, list[tuple[float, float]]] = {}
        for cam, first, last in self._in_flight.values():
            extra.setdefault(cam, []).append((first, last))
        out = dict(progress)
        for cam, spans in extra.items():
            p = out.get(cam)
            if p is not None:
                out[cam] = CameraProgress(p.ts, p.open + tuple(spans))
        return out

    def _save_crops(self, tracklets: list[Tracklet]) -> None:
        if self.crops is not None:
            for t in tracklets:
                self._crop_paths[t.tracklet_id] = self.crops.save(t)

    def _enqueue(self, kind: str, item: Any) -> None:
        self._raise_worker_error()
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="reidd-replay-reid", daemon=True)
            self._worker.start()
        while True:  # bounded: a slow embedder holds the pipeline back instead of piling up crops
            try:
                self._jobs.put((kind, item), timeout=0.5)
                return
            except queue.Full:
                self._raise_worker_error()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self._worker_error is not None or self._abort:
                continue  # failed or closed: drain without working, so the pipeline is not blocked
            kind, item = job
            t0 = time.perf_counter()
            try:
                if kind == "tick":
                    self.tick(*item)
                else:
                    self._save_crops(item)
                    self.submit_embedded(self.embedder.embed_tracklets(item), item)
            except BaseException as exc:  # noqa: BLE001 - handed to the pipeline thread, which raises it
                log.exception("re-ID worker failed")
                self._worker_error = exc
            self.worker_seconds += time.perf_counter() - t0

    def _raise_worker_error(self) -> None:
        if self._worker_error is not None:
            raise RuntimeError(f"re-ID worker failed: {self._worker_error}") from self._worker_error

    def close(self) -> None:
        """Stop the replay worker without doing what is still queued (a run that failed or was aborted)."""
        if self._worker is not None:
            self._abort = True
            try:
                self._jobs.put(None, timeout=5.0)
            except queue.Full:
                pass
            self._worker.join(timeout=5.0)
            self._worker = None

    def _join_worker(self) -> None:
        if self._worker is not None:
            self._jobs.put(None)
            self._worker.join()
            self._worker = None
        self._raise_worker_error()

    def submit_embedded(self, embs: list[TrackletEmbedding | None], tracklets: list[Tracklet] | None = None,
                        failed: str | None = None) -> None:
        """Hand embedded tracklets (None: a tracklet without crops, taken from ``tracklets``) to the matcher.
        ``failed``: the embedding of this batch failed with that error (every embedding is None)."""
        with self._lock:
            for t in tracklets or ():
                self._in_flight.pop(t.tracklet_id, None)
            for i, e in enumerate(embs):
                if self.recorder is not None:
                    if e is not None:
                        self.recorder.query(e)
                    elif tracklets is not None:
                        self.recorder.no_crops(tracklets[i])
                if e is not None:
                    # nothing after embedding reads the pixels: do not keep them while the query waits
                    # for its decision window (or for Redis to come back)
                    e.tracklet = dataclasses.replace(e.tracklet, crops=[])
                    self.matcher.submit(e)
                elif tracklets is not None:
                    t = tracklets[i]
                    if failed is not None and t.crops:
                        self._not_embedded[t.tracklet_id] = failed
                        t = dataclasses.replace(t, crops=[])  # decided without them: do not keep the pixels
                    self._seq += 1
                    heapq.heappush(self._no_crops, (t.last_ts, self._seq, t))

    #: after a failed live embedding, readiness stays degraded this long
    EMBED_FAILURE_S = 60.0

    def embedding_health(self) -> dict:
        """``state`` ``ok``, or ``degraded`` (with the ``reason``) within ``EMBED_FAILURE_S`` of a failed live
        embedding (its tracklets got new ids, unmatched); ``failures``: failed batches since start."""
        b = self._batcher
        out: dict = {"state": "ok", "failures": 0 if b is None else b.errors}
        if b is not None and b.last_error_mono is not None:
            ago = time.monotonic() - b.last_error_mono
            if ago < self.EMBED_FAILURE_S:
                out["state"] = "degraded"
                out["reason"] = (f"embedding failed {ago:.0f} s ago ({b.last_error}): those tracklets got new ids "
                                 "without matching")
        return out

    # ------------------------------------------------------------------ decisions
    def tick(self, now_ts: float | None, progress: Progress | None = None) -> None:
        """Decide what is due (``now_ts`` None: everything) and publish the events. ``progress`` (see
        :class:`~reidd.types.CameraProgress`) lets the matcher decide a tracklet before its full wait."""
        with self._lock:
            if now_ts is not None:
                self.context.clock.advance(now_ts)  # media time: the gallery's clock is what was decided
            if progress is not None and self._in_flight:
                progress = self._with_in_flight(progress)
            if self.recorder is not None:
                self.recorder.tick(now_ts, progress)
            decisions = self.matcher.decide(now_ts, progress)
            late = []
            while self._no_crops and (now_ts is None or self._no_crops[0][0] <= now_ts):
                late.append(heapq.heappop(self._no_crops)[2])
        for d in decisions:
            self._publish_decision(d)
        for i, t in enumerate(late):
            try:
                gid = self.matcher.allocate_global_id()
            except redis.RedisError:
                with self._lock:  # Redis is down: decide these later, lose nothing
                    for t2 in late[i:]:
                        self._seq += 1
                        heapq.heappush(self._no_crops, (t2.last_ts, self._seq, t2))
                break
            failed = self._not_embedded.pop(t.tracklet_id, None)
            reason = (f"embedding failed ({failed}): a new id, not matched" if failed is not None
                      else "no crop to embed (boxes too small): a new id, not matched")
            decided = t.last_ts if now_ts is None else max(now_ts, t.last_ts)
            self._publish_tracklet(t, gid, {"reason": reason, "decided_ts": round(decided, 6)})
        self.metrics.gallery_entries.set(len(self.matcher.gallery))
        if self._batcher is not None:
            self.metrics.export_total(self.metrics.embedder_failures, f"stage-{id(self)}", self._batcher.errors)
        self.metrics.redis_up.set(1.0 if self.matcher.redis_ok else 0.0)

    def _publish_decision(self, d: Decision) -> None:
        t = d.query.tracklet
        if d.best_similarity is not None:
            self.metrics.candidate_similarity.observe(d.best_similarity)
        if d.match is not None:
            m = d.match
            self.matches += 1
            self.metrics.matches.labels(camera=m.query_camera, gallery_camera=m.gallery_camera).inc()
            self.metrics.similarity.observe(m.similarity)
            gref = {"tracklet_id": m.gallery_id, "camera_id": m.gallery_camera,
                    "first_ts": m.gallery_first_ts, "last_ts": m.gallery_last_ts}
            qref = {"tracklet_id": t.tracklet_id, "camera_id": t.camera_id, "first_ts": t.first_ts,
                    "last_ts": t.last_ts}
            self.publish(match_event(query=qref, gallery=gref, similarity=round(m.similarity, 6),
                                     transit_s=round(m.transit_s, 6), global_id=m.global_id,
                                     daemon_id=self.daemon_id, score=d.score, explanation=d.explanation))
        elif d.new_vehicle:
            self.metrics.global_ids.inc()
        association = dict(d.explanation or {})
        if d.decided_ts is not None:
            association["decided_ts"] = round(d.decided_ts, 6)
        self._publish_tracklet(t, d.global_id, association)

    def _publish_tracklet(self, t: Tracklet, gid: int, association: dict | None = None) -> None:
        self.tracklets += 1
        self.publish(tracklet_event(
            camera_id=t.camera_id, local_id=t.local_id, tracklet_id=t.tracklet_id, global_id=gid,
            first_frame=t.first_frame, last_frame=t.last_frame, first_ts=t.first_ts, last_ts=t.last_ts,
            live=self.live, box_summary=box_summary(t), best_crop=self._crop_paths.pop(t.tracklet_id, None),
            cls=t.cls, num_boxes=len(t.boxes), daemon_id=self.daemon_id, association=association,
        ))
        if self.on_assigned is not None:
            self.on_assigned(t, gid)

    def finish(self, redis_wait_s: float = 30.0) -> None:
        """Embed what is queued and decide everything still pending (end of replay / shutdown).

        While Redis cannot allocate global ids, retry for up to ``redis_wait_s``; what is still
        undecided after that is reported as an error (its tracklets get no events).
        """
        if self._batcher is not None:
            if not (self._batcher.drain(120.0) and self._batcher.close(30.0)):
                log.error("embedder still busy at shutdown: tracklets still queued for embedding get no events")
        self._join_worker()
        deadline = time.monotonic() + redis_wait_s
        while True:
            self.tick(None)
            left = self.matcher.pending_count + len(self._no_crops) + self.matcher.unsaved_count
            if not left:
                return
            if time.monotonic() > deadline:
                log.error("Redis unavailable at shutdown: %d tracklets could not be decided or stored", left)
                return
            time.sleep(0.5)
