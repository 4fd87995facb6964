"""Assembles the re-ID side of the daemon: Redis (embedded or external), gallery, embedder, matcher,
event sinks and the stage that ties them together; and closes them in the right order."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from reidd.config import Config
from reidd.events.sinks import JsonlSink, MultiSink, RedisStreamSink, redis_client_factory
from reidd.gallery.redis_server import EmbeddedRedis, RedisUnavailable, connect
from reidd.gallery.store import Gallery
from reidd.match.matcher import Matcher
from reidd.match.recording import EmbeddingLog
from reidd.match.stage import CropStore, ReidStage
from reidd.metrics import Metrics
from reidd.reid.embedder import Embedder
from reidd.types import Event, Tracklet

log = logging.getLogger("reidd.runtime")


class MtmcWriter:
    """Final per-frame global ids, AI City MTMC format: ``camera_id obj_id frame_id x y w h -1 -1``
    (frame_id 1-based in the camera's video, obj_id the global id); sorted when closed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._part = self.path.with_name(self.path.name + ".part")
        self._fh = self._part.open("w", encoding="utf-8")

    def __call__(self, t: Tracklet, gid: int) -> None:
        for b in t.boxes:
            x1, y1, x2, y2 = b.xyxy
            self._fh.write(f"{t.camera_id} {gid} {b.frame + 1} {round(x1)} {round(y1)} "
                           f"{round(x2 - x1)} {round(y2 - y1)} -1 -1\n")

    def close(self) -> Path:
        self._fh.close()
        lines = self._part.read_text(encoding="utf-8").splitlines(keepends=True)
        lines.sort(key=lambda s: (s.split(" ", 1)[0], int(s.split(" ", 3)[2]), int(s.split(" ", 2)[1])))
        self.path.write_text("".join(lines), encoding="utf-8")
        self._part.unlink()
        return self.path


class ReidRuntime:
    """Everything re-ID needs for one run. ``stage`` is the pipeline sink; call :meth:`close` at the end."""

    def __init__(
        self,
        cfg: Config,
        *,
        live: bool,
        metrics: Metrics,
        redis_url: str | None = None,
        fresh_state_dir: str | Path | None = None,
        events_jsonl: str | Path | None = None,
        crops_dir: str | Path | None = None,
        crops_relative_to: str | Path | None = None,
        mtmc_path: str | Path | None = None,
        clock=None,
        embeddings_log: str | Path | None = None,
        embedding_dim: int | None = None,
    ):
        """``embedding_dim``: tracklets arrive already embedded (:func:`reidd.match.recording.rematch`), so no
        model is loaded; ``embeddings_log``: record the stage's input there (replay)."""
        self.cfg = cfg
        self.metrics = metrics
        self.embedded: EmbeddedRedis | None = None
        # replay: stable (deterministic event ids) yet distinct per camera set, so two replays sharing a
        # Redis still see each other's gallery entries; live: host and process
        cams = ",".join(c.id for c in cfg.enabled_cameras)
        self.daemon_id = cfg.daemon_id or (
            f"replay-{hashlib.sha1(cams.encode()).hexdigest()[:8]}" if not live else f"{socket.gethostname()}-{os.getpid()}"
        )
        gcfg = cfg.gallery.model_copy()
        spool_dir = Path(cfg.events.spool_dir)
        if fresh_state_dir is not None:  # replay: a private, empty Redis + spool so that reruns are identical
            fresh = Path(fresh_state_dir)
            shutil.rmtree(fresh, ignore_errors=True)
            gcfg.state_dir = str(fresh / "redis")
            gcfg.redis_url = None
            spool_dir = fresh / "spool"
        if redis_url:
            gcfg.redis_url = redis_url
        # load the model first: a bad checkpoint fails fast
        self.embedder = Embedder(cfg.reid, metrics) if embedding_dim is None else None
        dim = self.embedder.dim if self.embedder is not None else embedding_dim
        self.redis, self.embedded = connect(gcfg)
        self.redis_url = gcfg.redis_url or (self.embedded.url if self.embedded else "")
        metrics.redis_up.set(1.0)
        self.gallery = Gallery(self.redis, dim, gcfg, clock=clock or time.time,
                               daemon_id=self.daemon_id)
        loaded = self.gallery.load()
        if loaded:
            log.info("gallery: %d entries loaded from Redis", loaded)
        # motion boxes are all "car": class evidence only where the detector tells classes apart
        self.matcher = Matcher(cfg.matching, self.gallery, use_class=cfg.detector.type != "motion")
        self.stream_sink = RedisStreamSink(
            redis_client_factory(self.redis_url), cfg.events.stream, maxlen=cfg.events.maxlen,
            pubsub_channel=cfg.events.pubsub_channel, spool_dir=spool_dir, spool_max_mb=cfg.events.spool_max_mb,
            dedupe_ttl_s=cfg.events.dedupe_ttl_s,
            on_metrics=metrics.event_sink_hook(),
        )
        self.jsonl_sinks = [JsonlSink(p) for p in {str(p) for p in (events_jsonl, cfg.events.jsonl) if p}]
        self.sink = MultiSink([self.stream_sink, *self.jsonl_sinks])
        self.mtmc = MtmcWriter(mtmc_path) if mtmc_path else None
        crops = CropStore(crops_dir or cfg.events.crops_dir, cfg.events.crops_max, crops_relative_to) if (
            crops_dir or cfg.events.crops_dir) else None
        self.recorder = EmbeddingLog(embeddings_log, dim) if embeddings_log else None
        self.stage = ReidStage(cfg, embedder=self.embedder, matcher=self.matcher, publish=self._publish,
                               metrics=metrics, daemon_id=self.daemon_id, live=live, crops=crops,
                               on_assigned=self.mtmc, recorder=self.recorder)
        self.events = 0

    def _publish(self, ev: Event) -> None:
        self.events += 1
        self.metrics.events_emitted.labels(type=ev.type).inc()
        self.sink.publish(ev)

    def ready(self) -> tuple[bool, dict]:
        try:
            self.redis.ping()
            ok = True
        except Exception as exc:  # any client error means "not reachable"
            log.debug("readiness ping failed: %s", exc)
            ok = False
        self.metrics.redis_up.set(1.0 if ok else 0.0)
        return ok, {"redis": ok, "spool_depth": self.stream_sink.spool_depth}

    def finish(self) -> None:
        """Decide everything pending and deliver the events (Redis down: they stay in the spool)."""
        self.stage.finish()
        if not self.stream_sink.flush(timeout=30.0):
            log.warning("events not yet delivered to Redis remain in the spool (%d)", self.stream_sink.spool_depth)

    def close(self) -> None:
        for closer in (self.sink.close, self.gallery.close, self.redis.close):
            try:
                closer()
            except Exception:  # keep closing the rest
                log.exception("closing %s failed", closer)
        if self.mtmc is not None:
            self.mtmc.close()
        if self.recorder is not None:
            self.recorder.close()
        if self.embedded is not None:
            self.embedded.stop()


__all__ = ["ReidRuntime", "MtmcWriter", "RedisUnavailable"]
