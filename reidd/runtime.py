"""Assembles the re-ID side of the daemon: Redis (embedded or external), gallery, embedder, matcher,
event sinks and the stage that ties them together; and closes them in the right order."""

from __future__ import annotations

import hashlib
import logging
import shutil
import socket
from pathlib import Path

from reidd.config import Config
from reidd.context import RunContext
from reidd.events.sinks import JsonlSink, MultiSink, RedisStreamSink, redis_client_factory
from reidd.formats.mtmc import MtmcWriter
from reidd.gallery.redis_server import EmbeddedRedis, RedisUnavailable, connect
from reidd.gallery.store import Gallery
from reidd.match.matcher import Matcher
from reidd.match.recording import EmbeddingLog
from reidd.match.stage import CropStore, ReidStage
from reidd.reid.embedder import Embedder
from reidd.sources.identity import recording_tag
from reidd.telemetry import Metrics
from reidd.types import Event

log = logging.getLogger("reidd.runtime")


def events_readiness(health: dict, redis_ok: bool, grace_s: float) -> tuple[bool, dict]:
    """Whether events are delivered, kept or lost, from :meth:`RedisStreamSink.health` and a Redis PING.

    Delivering means Redis answers and deliveries have not failed for ``grace_s`` seconds or more. Not ready
    (``state: failing``) when events are being lost: not delivering and the spool not accepting (its disk
    failing, its bound reached), or any event refused within the last ``grace_s`` seconds (queue full,
    spool refusing), or the delivery thread stopped. Ready but ``degraded``: not delivering while the spool
    accepts (nothing is lost: the spool keeps them and delivers them in order once Redis is back), or the
    spool not accepting while Redis takes events directly, or deliveries failing for less than ``grace_s``.
    """
    failing_s = health["publish_failing_s"]
    delivering = redis_ok and (failing_s is None or failing_s < grace_s)
    refused_ago = health["last_refusal_s_ago"]
    recent_refusal = (refused_ago is not None and refused_ago < grace_s
                      and health["last_refusal_cause"] not in ("invalid", "closed"))
    if not redis_ok:
        redis_why = "Redis does not answer PING"
    elif failing_s is not None:
        redis_why = f"publishing to Redis has failed for {failing_s:.1f} s ({health['last_publish_error']})"
    else:
        redis_why = ""
    spool_error = health["spool_error"]
    if not health["worker_alive"]:
        state, reason = "failing", "the event delivery thread has stopped: events are not delivered"
    elif not delivering and not health["spool_accepting"]:
        state, reason = "failing", f"events are being lost: {redis_why} and the spool refuses them ({spool_error})"
    elif recent_refusal:
        state, reason = "failing", f"events were refused {refused_ago:.1f} s ago: {health['last_refusal']}"
        if redis_why:
            reason += f"; {redis_why}"
    elif not delivering or failing_s is not None:
        state, reason = "degraded", (f"{redis_why}; events are kept in the spool {health['spool_dir']} "
                                     f"({health['spool_depth']} waiting) and delivered in order once Redis takes them")
    elif not health["spool_accepting"]:
        state, reason = "degraded", (f"the spool refuses events ({spool_error}); they are delivered directly "
                                     "while Redis takes them and would be lost if it stops")
    else:
        state, reason = "ok", ""
    detail = {
        "state": state,
        "spool_depth": health["spool_depth"],
        "spool_accepting": health["spool_accepting"],
        "spool_error": spool_error,
        "publish_failing_s": failing_s,
        "refused": health["refused"],
    }
    if reason:
        detail["reason"] = reason
    return state != "failing", detail


def _recording(cam) -> str:
    """A file camera's recording tag ("" for streams, or a file that cannot be read: opening it says so)."""
    if cam.is_live:
        return ""
    try:
        return recording_tag(cam.url)
    except OSError:
        return ""


class ReidRuntime:
    """Everything re-ID needs for one run. ``stage`` is the pipeline sink; call :meth:`close` at the end."""

    #: deliveries may fail this long (a blip, a failover) before they count as "not delivering"; an event
    #: refused keeps readiness at 503 for this long
    publish_grace_s = 5.0

    def __init__(
        self,
        cfg: Config,
        context: RunContext,
        *,
        metrics: Metrics,
        redis_url: str | None = None,
        fresh_state_dir: str | Path | None = None,
        events_jsonl: str | Path | None = None,
        crops_dir: str | Path | None = None,
        crops_relative_to: str | Path | None = None,
        mtmc_path: str | Path | None = None,
        embeddings_log: str | Path | None = None,
        embedding_dim: int | None = None,
    ):
        """``embedding_dim``: tracklets arrive already embedded (:func:`reidd.match.recording.rematch`), so no
        model is loaded; ``embeddings_log``: record the stage's input there (replay)."""
        self.cfg = cfg
        self.metrics = metrics
        self.embedded: EmbeddedRedis | None = None
        # Stable (deterministic event ids, and a restart repeats its events under the same ids) yet distinct
        # per camera set and recording, so daemons sharing a Redis still see each other's gallery entries and
        # two recordings of the same cameras replayed into one Redis stay apart (files: their recording tag,
        # reidd.sources.identity, which their tracklet ids carry too). Live: the host too (live tracklet ids
        # also carry the run, see Tracklet.session).
        cams = hashlib.sha1(",".join(f"{c.id}={_recording(c)}" for c in cfg.enabled_cameras).encode()).hexdigest()[:8]
        self.context = context
        self.daemon_id = cfg.daemon_id or (f"replay-{cams}" if context.replay else f"{socket.gethostname()}-{cams}")
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
        # a replay's private Redis counts ids from 1 (reproducible); a shared one never repeats an id even
        # when it loses its data (id epochs start at the clock's microseconds)
        self.gallery = Gallery(self.redis, dim, gcfg, clock=context.clock, daemon_id=self.daemon_id,
                               time_ids=fresh_state_dir is None)
        loaded = self.gallery.load()
        if loaded:
            log.info("gallery: %d entries loaded from Redis", loaded)
        # motion boxes are all "car": class evidence only where the detector tells classes apart
        self.matcher = Matcher(cfg.matching, self.gallery, use_class=cfg.detector.type != "motion")
        metrics.watch_reid(self.matcher)  # gallery changes, backlog, pending, fragments: read at every scrape
        self.stream_sink = RedisStreamSink(
            redis_client_factory(self.redis_url), cfg.events.stream, maxlen=cfg.events.maxlen,
            pubsub_channel=cfg.events.pubsub_channel, spool_dir=spool_dir, spool_max_mb=cfg.events.spool_max_mb,
            dedupe_ttl_s=cfg.events.dedupe_ttl_s,
            on_metrics=metrics.event_sink_hook(),
        )
        self.jsonl_sinks = [JsonlSink(p) for p in {str(p) for p in (events_jsonl, cfg.events.jsonl) if p}]
        self.sink = MultiSink([self.stream_sink, *self.jsonl_sinks])
        # one source for the spool depth: the gauge reads the spool's counter when scraped, as readiness does
        metrics.spool_depth.set_function(lambda: self.stream_sink.spool_depth)
        self.mtmc = MtmcWriter(mtmc_path) if mtmc_path else None
        crops = CropStore(crops_dir or cfg.events.crops_dir, cfg.events.crops_max, crops_relative_to) if (
            crops_dir or cfg.events.crops_dir) else None
        self.recorder = EmbeddingLog(embeddings_log, dim) if embeddings_log else None
        self.stage = ReidStage(cfg, embedder=self.embedder, matcher=self.matcher, publish=self._publish,
                               metrics=metrics, daemon_id=self.daemon_id, context=context, crops=crops,
                               on_assigned=self.mtmc, recorder=self.recorder)
        self.events = 0

    def _publish(self, ev: Event) -> None:
        self.events += 1
        self.metrics.events_emitted.labels(type=ev.type).inc()
        self.sink.publish(ev)

    def ready(self) -> tuple[bool, dict]:
        """Readiness of the re-ID side: ``(ok, detail)``; ``ok`` is False while events are being lost.

        ``detail``: ``redis`` (PING answered), ``gallery`` (:meth:`Gallery.health`: ``degraded`` for a while
        after Redis lost its data), ``embedding`` (:meth:`ReidStage.embedding_health`: ``degraded`` while live
        embedding fails), ``spool_depth`` (the spool's own counter, the same number
        ``reidd_event_spool_depth`` reports) and ``events`` (see :func:`events_readiness`): ``state`` is
        ``ok``; ``degraded`` (still ready: Redis unreachable or rejecting writes while the spool takes the
        events, which are delivered in order later, or the spool not writable while Redis takes them); or
        ``failing`` (not ready: neither Redis nor the spool takes events, or events were refused within the
        last ``publish_grace_s`` seconds, or the delivery thread stopped), with the ``reason`` in words.
        """
        try:
            self.redis.ping()
            redis_ok = True
        except Exception as exc:  # any client error means "not reachable"
            log.debug("readiness ping failed: %s", exc)
            redis_ok = False
        self.metrics.redis_up.set(1.0 if redis_ok else 0.0)
        ok, events = events_readiness(self.stream_sink.health(), redis_ok, self.publish_grace_s)
        return ok, {"redis": redis_ok, "spool_depth": events["spool_depth"], "events": events,
                    "gallery": self.gallery.health(), "embedding": self.stage.embedding_health()}

    def finish(self) -> None:
        """Decide everything pending and deliver the events (Redis down: they stay in the spool)."""
        self.stage.finish()
        if not self.stream_sink.flush(timeout=30.0):
            log.warning("events not yet delivered to Redis remain in the spool (%d)", self.stream_sink.spool_depth)

    def close(self) -> None:
        for closer in (self.stage.close, self.sink.close, self.gallery.close, self.redis.close):
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


__all__ = ["ReidRuntime", "RedisUnavailable", "events_readiness"]
