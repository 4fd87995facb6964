"""Lifecycle of ``reidd run`` and ``reidd replay``: start, signals, graceful drain, outputs, exit codes."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from reidd.config import Config, redact_url
from reidd.context import RunContext
from reidd.device import HeapTrimmer
from reidd.outputs import MotWriter, TrackletJsonlWriter
from reidd.pipeline import Pipeline, PipelineResult
from reidd.telemetry import Metrics, MetricsServer
from reidd.types import Tracklet

log = logging.getLogger("reidd.daemon")


def setup_logging(level: str = "INFO", json_format: bool = False) -> None:
    """Log to stderr, plain or one JSON object per line."""

    class _Json(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return json.dumps(
                {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                 "msg": record.getMessage()}
            )

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json() if json_format else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class _SignalStop:
    """SIGTERM / SIGINT ask the pipeline to drain; a second signal exits at once."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.count = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_SignalStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.count += 1
        if self.count > 1:
            log.error("second signal: exiting without draining")
            raise SystemExit(130)
        log.info("%s received: draining (flushing open tracklets)", signal.Signals(signum).name)
        self.pipeline.stop()

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class TrackletLogger:
    """Logs every closed tracklet at INFO (the sink ``run`` has before re-ID is wired in)."""

    def __call__(self, tracklets: list[Tracklet]) -> None:
        for t in tracklets:
            log.info(
                "tracklet %s cls=%d frames %d-%d (%.2f-%.2f s) boxes=%d crops=%d reason=%s",
                t.tracklet_id, t.cls, t.first_frame, t.last_frame, t.first_ts, t.last_ts, len(t.boxes),
                len(t.crops), t.reason,
            )


def _print_summary(result: PipelineResult, stream: Any = sys.stdout) -> None:
    print(f"{'camera':<16}{'state':<14}{'frames':>8}{'tracklets':>11}  error", file=stream)
    for c in result.cameras.values():
        print(f"{c.camera_id:<16}{c.state:<14}{c.frames:>8}{c.tracklets:>11}  {c.error or ''}", file=stream)
    fps = result.frames / result.wall_seconds if result.wall_seconds else 0.0
    print(f"{result.frames} frames in {result.wall_seconds:.1f} s ({fps:.1f} frames/s)", file=stream)
    dropped = [f"{c.camera_id} {c.frames_dropped} ({100 * c.frames_dropped / (c.frames + c.frames_dropped):.0f}%)"
               for c in result.cameras.values() if c.frames_dropped]
    if dropped:
        print(f"frames dropped, the pipeline slower than the cameras: {', '.join(dropped)}", file=stream)


def run_replay(cfg: Config, out_dir: str | Path, *, speed: float | None = None,
               metrics: Metrics | None = None, serve_metrics: bool = False, redis_url: str | None = None,
               events_jsonl: str | Path | None = None, mtmc_path: str | Path | None = None,
               save_crops: bool = True, save_embeddings: bool = False) -> tuple[int, PipelineResult]:
    """Replay recorded files deterministically.

    Writes OUT/tracklets.jsonl, OUT/mot/<camera>.txt, OUT/summary.json and, with re-ID enabled,
    events (Redis stream + optional JSONL), OUT/crops/ and the MTMC file. Without ``redis_url`` a
    private embedded Redis under OUT/state is started empty, so reruns give identical outputs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = metrics or Metrics()
    context = RunContext.for_replay()
    for i, cam in enumerate(cfg.cameras):
        if cam.loop and cam.enabled:  # a replay ends: it plays each file once, whatever loop says
            log.warning("cameras[%d].loop is ignored by replay: camera %s's file is played once", i, cam.id)
    jsonl = mot = runtime = None

    def readiness() -> tuple[bool, dict]:
        return (runtime.ready() if runtime is not None else (True, {})) if started else (False, {"starting": True})

    started = False
    server = _maybe_serve(cfg, metrics, readiness) if serve_metrics else None
    try:
        jsonl = TrackletJsonlWriter(out / "tracklets.jsonl")
        mot = MotWriter(out / "mot", [c.id for c in cfg.enabled_cameras])
        sinks: list = [jsonl, mot]
        if cfg.reid.enabled:
            from reidd.runtime import ReidRuntime

            runtime = ReidRuntime(
                cfg, context, metrics=metrics, redis_url=redis_url,
                fresh_state_dir=None if redis_url else out / "state", events_jsonl=events_jsonl,
                crops_dir=(out / "crops") if save_crops else None, crops_relative_to=out, mtmc_path=mtmc_path,
                embeddings_log=(out / "embeddings.jsonl") if save_embeddings else None,
            )
            sinks.append(runtime.stage)
            print(f"redis: {redact_url(runtime.redis_url)}  events stream: {cfg.events.stream}", flush=True)
        started = True
        pipeline = Pipeline(cfg, context, speed=speed, metrics=metrics, sinks=sinks,
                            on_tick=[runtime.stage.on_tick] if runtime else [])
        with _SignalStop(pipeline), _trimming():
            t0 = time.perf_counter()
            result = pipeline.run()
            if runtime is not None:
                runtime.finish()
                # the re-ID worker may still be embedding when the pipeline ends: count its finish too
                result.wall_seconds = time.perf_counter() - t0
                result.stage_seconds["reid_worker"] = runtime.stage.worker_seconds
    finally:
        for writer in (jsonl, mot):
            if writer is not None:
                writer.close()
        if runtime is not None:
            runtime.close()
        if server:
            server.stop()
    summary = {
        "cameras": {k: {"frames": v.frames, "tracklets": v.tracklets, "state": v.state, "error": v.error,
                        "dropped_short": v.dropped_short, "dropped_pedestrians": v.dropped_pedestrians,
                        "dropped_static": v.dropped_static, "dropped_motion": v.dropped_motion}
                    for k, v in result.cameras.items()},
        "tracklets": jsonl.count,
        "events": runtime.events if runtime else 0,
        "matches": runtime.stage.matches if runtime else 0,
        "frames": result.frames,
        "wall_seconds": round(result.wall_seconds, 3),
        "stage_seconds": {k: round(v, 3) for k, v in result.stage_seconds.items()},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _print_summary(result)
    if runtime is not None:
        print(f"events: {runtime.events} ({runtime.stage.matches} cross-camera matches)")
    print(f"outputs: {out / 'tracklets.jsonl'}, {out / 'mot'}/<camera>.txt, {out / 'summary.json'}"
          + (f", {mtmc_path}" if mtmc_path and runtime else ""))
    return (1 if result.failed else 0), result


@contextlib.contextmanager
def _trimming():
    """Freed heap pages go back to the system every 2 s while the pipeline runs (reidd.device.HeapTrimmer)."""
    trimmer = HeapTrimmer().start()
    try:
        yield trimmer
    finally:
        trimmer.stop()


class MetricsBindError(RuntimeError):
    """metrics.host:metrics.port cannot be served (in use, not an address of this machine, ...)."""


def _maybe_serve(cfg: Config, metrics: Metrics, readiness: Any = None) -> MetricsServer | None:
    """Bind the metrics endpoint first of all, so a port in use is a start-up error, not one after model loading."""
    if not cfg.metrics.enabled:
        return None
    try:
        server = MetricsServer(metrics, cfg.metrics.host, cfg.metrics.port, readiness).start()
    except OSError as exc:
        what = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be served ({exc.strerror or exc})"
        raise MetricsBindError(f"metrics.port: {cfg.metrics.host}:{cfg.metrics.port} {what} "
                               "(set metrics.port to a free port, 0 for any, or metrics.enabled: false)") from None
    log.info("metrics at %s (health: /healthz, readiness: /readyz)", server.url)
    return server


def run_live(cfg: Config, *, metrics: Metrics | None = None) -> int:
    """``reidd run``: process the cameras until they end or SIGTERM; exit 0 after a clean drain."""
    metrics = metrics or Metrics()
    context = RunContext.for_live(cfg)
    runtime = pipeline = None
    sinks: list = [TrackletLogger()]

    def readiness() -> tuple[bool, dict]:
        if pipeline is None:
            return False, {"starting": True, "model_loaded": False}
        streaming = [c for c, s in pipeline.summary.items() if s.state == "streaming"]
        dropping = pipeline.dropping()
        detail: dict = {"cameras_streaming": streaming, "model_loaded": True, "frames_dropping": dropping}
        ok = bool(streaming)
        # still ready but degraded: what works less well than it should, in words
        reasons = [f"camera {c} dropping {d['dropped_percent']:.0f}% of frames: the pipeline is slower than the "
                   "cameras" for c, d in sorted(dropping.items())]
        if runtime is not None:
            r_ok, r_detail = runtime.ready()
            ok = ok and r_ok
            detail.update(r_detail)
            for part, state in sorted(r_detail.items()):  # events, gallery, ...: {"state": ..., "reason": ...}
                if isinstance(state, dict) and state.get("state") == "degraded":
                    reasons.append(f"{part}: {state.get('reason') or 'degraded'}")
        detail["degraded"] = bool(reasons)
        detail["degraded_reasons"] = reasons
        return ok, detail

    server = _maybe_serve(cfg, metrics, readiness)
    t0 = time.time()
    try:
        if cfg.reid.enabled:
            from reidd.runtime import ReidRuntime

            # live streams run on the wall clock (the gallery then also audits Redis for entries other daemons
            # removed); files played by `run` on their media time (RunContext.for_live)
            runtime = ReidRuntime(cfg, context, metrics=metrics)
            sinks.append(runtime.stage)
            shown = redact_url(runtime.redis_url)
            how = ("reidd events tail --config CAMERAS.yaml: the embedded server's password is in "
                   f"{cfg.gallery.state_dir}/redis.url, readable by you only") if cfg.gallery.redis_url is None else (
                   f"reidd events tail --redis-url {shown}")
            log.info("redis %s; subscribe to stream '%s' (%s)", shown, cfg.events.stream, how)
        pipeline = Pipeline(cfg, context, metrics=metrics, sinks=sinks,
                            on_tick=[runtime.stage.on_tick] if runtime else [])
        with _SignalStop(pipeline), _trimming():
            result = pipeline.run()
            if runtime is not None:
                runtime.finish()
    finally:
        if runtime is not None:
            runtime.close()
        if server:
            server.stop()
    _print_summary(result, sys.stderr)
    log.info("stopped after %.1f s", time.time() - t0)
    if result.stopped:
        return 0
    return 1 if len(result.failed) == len(result.cameras) else 0
