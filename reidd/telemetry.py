"""Every Prometheus metric reidd exposes, defined once, plus the HTTP endpoint.

Each :class:`Metrics` owns its own ``CollectorRegistry`` so several pipelines can live in one
process (tests) without clashing.

Components that keep their own counters (the gallery's ``stats``, the matcher's backlog, the readers'
queues) are exported through *collectors*: callables registered with :meth:`Metrics.add_collector`
that copy those values into the metrics. :meth:`Metrics.refresh` runs them (under one lock); it is
called by every ``/metrics`` scrape (:meth:`Metrics.render`) and by the pipeline about twice a second.
Cumulative component counters become Prometheus counters through :meth:`Metrics.export_total`.
:meth:`Metrics.watch_reid` registers the collector for a matcher and its gallery (the pipeline does it
for any sink that has a ``matcher``). Label sets known in advance (cameras, close reasons, event types,
topology pairs) are created up front by :meth:`Metrics.prepare`, so every metric has a sample from the
start of a run (a counter at 0 rather than absent). :class:`MetricsServer` (``start()``/``stop()``) is a small HTTP server with

* ``/metrics``  Prometheus text format,
* ``/healthz``  200 while the process is alive,
* ``/readyz``   200 when the readiness callback says so (models loaded, a camera streaming, events
  delivered or kept in the spool), else 503 with the reasons as JSON.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

log = logging.getLogger("reidd.telemetry")

_LAT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SIM_BUCKETS = tuple(round(x * 0.05, 2) for x in range(-4, 21))
SOURCE_STATES = ("connecting", "streaming", "reconnecting", "failed", "finished", "stopped")
#: ``reidd_tracklets_closed_total`` reasons (reidd.track.tracklets).
CLOSE_REASONS = ("lost", "exit", "end", "periodic", "evicted")
#: ``reidd_events_total`` types.
EVENT_TYPES = ("tracklet", "match")
#: ``reidd_gallery_changes_total`` kinds: the keys of ``Gallery.stats``.
GALLERY_CHANGES = ("added", "synced", "expired", "evicted", "missing", "skipped", "resyncs")


class Metrics:
    """The daemon's metric objects (names follow Prometheus conventions, ``camera`` label per camera)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self.frames_read = Counter("reidd_frames_read_total", "Frames decoded from the source.", ["camera"], registry=r)
        self.frames_processed = Counter(
            "reidd_frames_processed_total", "Frames run through detection and tracking.", ["camera"], registry=r
        )
        self.frames_dropped = Counter(
            "reidd_frames_dropped_total", "Live frames discarded because the pipeline was behind (newest wins).",
            ["camera"], registry=r,
        )
        self.source_state = Gauge(
            "reidd_source_state", "1 for the camera's current state, 0 for the others.", ["camera", "state"],
            registry=r,
        )
        self.source_reconnects = Counter(
            "reidd_source_reconnects_total", "Reconnection attempts of live sources.", ["camera"], registry=r
        )
        self.source_last_frame = Gauge(
            "reidd_source_last_frame_timestamp_seconds", "Wall time of the camera's last frame.", ["camera"],
            registry=r,
        )
        self.queue_depth = Gauge("reidd_queue_depth", "Frames waiting in a camera's reader queue.", ["camera"],
                                 registry=r)
        self.stage_seconds = Histogram(
            "reidd_stage_seconds", "Time per pipeline stage call.", ["stage"], buckets=_LAT_BUCKETS, registry=r
        )
        self.detector_latency = Histogram(
            "reidd_detector_latency_seconds", "Detector call latency (one batch).", buckets=_LAT_BUCKETS, registry=r
        )
        self.detector_batch = Histogram(
            "reidd_detector_batch_size", "Frames per detector call.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.embedder_latency = Histogram(
            "reidd_embedder_latency_seconds", "Embedder call latency (one batch).", buckets=_LAT_BUCKETS, registry=r
        )
        self.embedder_failures = Counter(
            "reidd_embedder_failures_total",
            "Live embedding batches that failed (logged): their tracklets got new global ids without matching.",
            registry=r,
        )
        self.embedder_batch = Histogram(
            "reidd_embedder_batch_size", "Crops per embedder call.", buckets=_BATCH_BUCKETS, registry=r
        )
        self.active_tracks = Gauge("reidd_active_tracks", "Tracks currently confirmed by the tracker.", ["camera"],
                                   registry=r)
        self.open_tracklets = Gauge("reidd_open_tracklets", "Tracklets being built.", ["camera"], registry=r)
        self.tracklets_closed = Counter(
            "reidd_tracklets_closed_total", "Tracklets closed, by reason (lost, exit, end, periodic, evicted).",
            ["camera", "reason"], registry=r,
        )
        self.tracklets_dropped = Counter(
            "reidd_tracklets_dropped_total",
            "Tracklets dropped: reason 'short' (fewer than tracklets.min_boxes boxes), 'pedestrian' (a lone person too "
            "slow for a rider), 'static' (a static low-confidence detection), 'motion' (motion_assist's blobs alone).",
            ["camera", "reason"],
            registry=r,
        )
        self.gallery_entries = Gauge("reidd_gallery_entries", "Entries in the in-memory gallery index.", registry=r)
        self.matches = Counter(
            "reidd_matches_total", "Cross-camera matches, by query and gallery camera.",
            ["camera", "gallery_camera"], registry=r,
        )
        self.global_ids = Counter("reidd_global_ids_total", "New global vehicle ids allocated.", registry=r)
        self.similarity = Histogram(
            "reidd_match_similarity", "Cosine similarity of accepted matches.", buckets=_SIM_BUCKETS, registry=r
        )
        self.candidate_similarity = Histogram(
            "reidd_candidate_similarity", "Cosine similarity of the best candidate of every matched-or-not tracklet.",
            buckets=_SIM_BUCKETS, registry=r,
        )
        self.events_emitted = Counter(
            "reidd_events_total", "Events produced, by type (tracklet, match).", ["type"], registry=r
        )
        self.events_published = Counter(
            "reidd_events_published_total", "Events delivered to the Redis stream.", registry=r
        )
        self.events_refused = Counter(
            "reidd_events_refused_total", "Events refused: the spool at its bound or its disk failing (full, read-only) while Redis is down (logged once).",
            registry=r,
        )
        self.event_failures = Counter(
            "reidd_event_publish_failures_total", "Failed attempts to deliver an event to Redis.", registry=r
        )
        self.spool_depth = Gauge("reidd_event_spool_depth", "Events waiting in the on-disk spool.", registry=r)
        self.redis_up = Gauge("reidd_redis_up", "1 when the last Redis call succeeded.", registry=r)
        self.model_loaded = Gauge("reidd_model_loaded", "1 once detector (and embedder when enabled) are loaded.",
                                  registry=r)
        self.gpu_memory = Gauge("reidd_gpu_memory_bytes", "CUDA memory allocated by torch (0 on CPU).", registry=r)
        # exported from the gallery's and the matcher's own counters by the collector of watch_reid()
        self.gallery_changes = Counter(
            "reidd_gallery_changes_total",
            "Changes to the in-memory gallery, by kind: added (by this daemon), synced (added by other daemons), "
            "expired (ttl_s), evicted (max_entries), missing (key gone from Redis), skipped (unreadable or "
            "other-dimension entries), resyncs (full reloads after falling behind the change stream).",
            ["change"], registry=r,
        )
        self.gallery_data_loss = Counter(
            "reidd_gallery_data_loss_total",
            "Times Redis lost the gallery and the global id counter while this daemon ran (a FLUSHALL, a restart "
            "without persistence, a failover to an empty replica): ids continue from a new epoch, never repeating, "
            "and the daemon wrote its live entries back.", registry=r,
        )
        self.gallery_backlog = Gauge(
            "reidd_gallery_backlog_entries",
            "Decided gallery entries Redis has not taken yet (Redis unreachable); kept locally and still searched.",
            registry=r,
        )
        self.gallery_backlog_dropped = Counter(
            "reidd_gallery_backlog_dropped_total",
            "Backlog entries dropped because the backlog was full (Redis down too long): their events were "
            "published, but they can no longer be matched against.", registry=r,
        )
        self.matcher_pending = Gauge(
            "reidd_matcher_pending_tracklets",
            "Embedded tracklets waiting for their cross-camera decision (matching.wait_s).", registry=r,
        )
        self.fragments_joined = Counter(
            "reidd_fragments_joined_total",
            "Tracklets that continued a broken track of their own camera (decided with it as one vehicle).",
            registry=r,
        )
        self._collect_lock = threading.RLock()
        self._collectors: dict[str, Callable[[], None]] = {}
        self._exported: dict[tuple, float] = {}
        self._failed_collectors: set[str] = set()

    # ------------------------------------------------------------------ declared metrics
    def declared(self) -> dict[str, Any]:
        """Every reidd metric object of this instance, by its family name (``reidd_frames_read``, ...)."""
        from prometheus_client.metrics import MetricWrapperBase

        return {m._name: m for m in vars(self).values() if isinstance(m, MetricWrapperBase)}

    def prepare(self, cameras: Iterable[str], *, stages: Iterable[str] = (),
                match_pairs: Iterable[tuple[str, str]] = (), reid: bool = False) -> None:
        """Create the label sets known before any frame, so their series exist from the start (at 0).

        ``cameras``: the cameras this process reads; ``stages``: ``reidd_stage_seconds`` stages;
        ``match_pairs``: (query camera, gallery camera) pairs the topology allows; ``reid``: the
        re-ID stage runs (event types, gallery and matcher series).
        """
        for cam in cameras:
            for metric in (self.frames_read, self.frames_processed, self.frames_dropped, self.source_reconnects):
                metric.labels(camera=cam)
            for reason in ("short", "pedestrian", "static", "motion"):
                self.tracklets_dropped.labels(camera=cam, reason=reason)
            for gauge in (self.queue_depth, self.active_tracks, self.open_tracklets):
                gauge.labels(camera=cam).set(0)
            for reason in CLOSE_REASONS:
                self.tracklets_closed.labels(camera=cam, reason=reason)
        for stage in stages:
            self.stage_seconds.labels(stage=stage)
        for query_cam, gallery_cam in match_pairs:
            self.matches.labels(camera=query_cam, gallery_camera=gallery_cam)
        if reid:
            for t in EVENT_TYPES:
                self.events_emitted.labels(type=t)
            for change in GALLERY_CHANGES:
                self.gallery_changes.labels(change=change)

    # ------------------------------------------------------------------ collectors
    def add_collector(self, key: str, fn: Callable[[], None]) -> None:
        """Run ``fn()`` on every :meth:`refresh` (replaces an earlier collector with the same ``key``).

        ``fn`` runs under the metrics' collect lock, from the pipeline thread or a scrape's thread: it
        must only read its component's counters (cheap, no I/O) and set metrics, e.g. with
        :meth:`export_total`."""
        with self._collect_lock:
            self._collectors[key] = fn

    def remove_collector(self, key: str) -> None:
        """Stop running the collector ``key`` (the values it set stay)."""
        with self._collect_lock:
            self._collectors.pop(key, None)

    def refresh(self) -> None:
        """Bring every collected value up to date: GPU memory and the registered collectors."""
        with self._collect_lock:
            self.update_gpu_memory()
            for key, fn in list(self._collectors.items()):
                try:
                    fn()
                except Exception:  # a broken collector must not break /metrics or the pipeline
                    if key not in self._failed_collectors:
                        self._failed_collectors.add(key)
                        log.exception("metrics collector %s failed (logged once)", key)

    def export_total(self, counter: Counter, source: str, value: float, **labels: str) -> None:
        """Advance ``counter`` (with ``labels``) to follow a component's cumulative count ``value``.

        ``source`` names the component (one daemon may have several, one after the other): each
        source's own increase is added, so the counter keeps counting across sources and never goes
        down."""
        key = (id(counter), source, tuple(sorted(labels.items())))
        with self._collect_lock:
            child = counter.labels(**labels) if labels else counter
            delta = float(value) - self._exported.get(key, 0.0)
            if delta > 0:
                child.inc(delta)
                self._exported[key] = float(value)

    def watch_reid(self, matcher: Any) -> None:
        """Export a matcher's counters and its gallery's ``stats`` (idempotent per matcher).

        Reads ``matcher.gallery.stats`` (``reidd_gallery_changes_total``), ``matcher.unsaved_count`` and
        ``matcher.unsaved_dropped`` (the backlog kept while Redis is down), ``matcher.pending_count`` and
        ``matcher.fragments_joined``. ``reidd_gallery_entries`` stays with the re-ID stage's ``tick`` (a
        closed gallery is empty: its last value while open is the one worth keeping). Holds a reference to
        the matcher until this Metrics is dropped."""
        source = f"matcher-{id(matcher)}"
        gallery = matcher.gallery

        def collect() -> None:
            stats = dict(gallery.stats)
            for change in GALLERY_CHANGES:
                self.export_total(self.gallery_changes, source, stats.get(change, 0), change=change)
            self.export_total(self.gallery_data_loss, source, stats.get("data_loss", 0))
            self.gallery_backlog.set(matcher.unsaved_count)
            self.export_total(self.gallery_backlog_dropped, source, matcher.unsaved_dropped)
            self.matcher_pending.set(matcher.pending_count)
            self.export_total(self.fragments_joined, source, matcher.fragments_joined)

        self.add_collector(source, collect)
        self.refresh()

    def set_source_state(self, camera: str, state: str) -> None:
        for s in SOURCE_STATES:
            self.source_state.labels(camera=camera, state=s).set(1.0 if s == state else 0.0)

    def update_gpu_memory(self) -> None:
        """CUDA memory torch has allocated on all devices; 0 when torch is not loaded or CUDA not in use
        (never imports torch, never initialises CUDA)."""
        torch = sys.modules.get("torch")
        value = 0.0
        if torch is not None:
            try:
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    value = float(sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count())))
            except Exception:  # pragma: no cover - a CUDA error: keep the last value
                return
        self.gpu_memory.set(value)

    def event_sink_hook(self):
        """An ``on_metrics(name, value)`` callback for the Redis stream sink (cumulative values)."""
        last: dict[str, float] = {}
        counters = {"published": self.events_published, "publish_failures": self.event_failures,
                    "refused": self.events_refused}

        def hook(name: str, value: float) -> None:
            if name == "spool_depth":
                self.spool_depth.set(value)
            elif name in counters:
                delta = value - last.get(name, 0.0)
                if delta > 0:
                    counters[name].inc(delta)
                    if name == "published":
                        self.redis_up.set(1.0)
                    elif name == "publish_failures":
                        self.redis_up.set(0.0)
                last[name] = value

        return hook

    def render(self) -> bytes:
        """The Prometheus text exposition, after :meth:`refresh`."""
        self.refresh()
        return generate_latest(self.registry)


class _Channel(HTTPChannel):
    """waitress' connection, remembering when the request it is reading began (see :class:`_Server`)."""

    request_started = 0.0

    def received(self, data: bytes) -> bool:
        if self.request is None and data:
            self.request_started = time.monotonic()
        return super().received(data)


class _Server(TcpWSGIServer):
    """waitress' server, plus a deadline for reading one request.

    waitress closes a connection that stays silent for ``channel_timeout``; a client that trickles a
    byte every few seconds never is. Here a request whose headers have not all arrived
    ``request_timeout`` seconds after its first byte closes its connection too (checked every
    ``cleanup_interval``)."""

    channel_class = _Channel
    request_timeout = 10.0

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = time.monotonic() - self.request_timeout
        for channel in list(self.active_channels.values()):
            if channel.request is not None and not channel.requests and channel.request_started < cutoff:
                channel.will_close = True


class MetricsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` on one port, served by waitress.

    Bounded whatever clients do: ``threads`` worker threads answer the requests (one network thread
    reads and writes every connection, so idle or slow clients hold no worker); at most
    ``connection_limit`` connections are open at once, later ones wait in the listen backlog
    (``backlog``); a connection idle for ``idle_timeout`` seconds, or still sending one request's
    headers after ``request_timeout`` seconds, is closed. The port is bound in the constructor (an
    ``OSError`` there, e.g. ``EADDRINUSE``); :meth:`start` starts serving.
    """

    THREADS = 4
    BACKLOG = 1024
    CONNECTION_LIMIT = 512
    IDLE_TIMEOUT = 5
    REQUEST_TIMEOUT = 10.0

    def __init__(self, metrics: Metrics, host: str, port: int,
                 readiness: Callable[[], tuple[bool, dict]] | None = None):
        self.metrics = metrics
        self.readiness = readiness or (lambda: (True, {}))
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            self.host, self.port = sock.getsockname()[:2]
            # requests waiting for a free worker are the bound doing its job, not worth a line each
            logging.getLogger("waitress.queue").setLevel(logging.ERROR)
            self._server = _Server(
                self._app, {}, _sock=sock, bind_socket=False, sockinfo=(family, socket.SOCK_STREAM, 0, (host, self.port)),
                sockets=[sock], threads=self.THREADS, backlog=self.BACKLOG,
                connection_limit=self.CONNECTION_LIMIT, channel_timeout=self.IDLE_TIMEOUT, cleanup_interval=1,
                asyncore_use_poll=True,  # select() fails past fd 1023
                max_request_header_size=16384, max_request_body_size=65536,
                log_socket_errors=False,  # a scraper resetting its connection is not worth a traceback
                ident="reidd", clear_untrusted_proxy_headers=False,
            )
        except BaseException:
            sock.close()
            raise
        self._server.request_timeout = self.REQUEST_TIMEOUT
        self._thread = threading.Thread(target=self._server.run, name="reidd-metrics", daemon=True)
        self._stopped = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> "MetricsServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port and every connection, stop the threads; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        server = self._server

        def close_all() -> None:  # in the network thread, which returns once nothing is left to watch
            for obj in list(server._map.values()):
                if obj is not server and obj is not server.trigger:
                    obj.handle_close()
            server.close()

        woken = False
        if self._thread.is_alive():
            try:
                server.trigger.pull_trigger(close_all)
                woken = True
            except OSError as exc:  # its wake-up pipe is gone (closed under it): the loop cannot be woken
                log.warning("metrics server: could not wake its network thread (%s); closing from here", exc)
            self._thread.join(timeout=10 if woken else 2)
        if not woken:
            try:
                close_all()
            except OSError:
                pass
        server.task_dispatcher.shutdown(timeout=5)

    # ------------------------------------------------------------------ the WSGI application
    def _app(self, environ: dict, start_response: Callable) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "")
        if method not in ("GET", "HEAD"):
            code, body, ctype = 405, b"only GET and HEAD\n", "text/plain"
        elif path == "/metrics":
            code, body, ctype = 200, self.metrics.render(), CONTENT_TYPE_LATEST
        elif path == "/healthz":
            code, body, ctype = 200, b'{"status":"ok"}\n', "application/json"
        elif path == "/readyz":
            try:
                ok, detail = self.readiness()
            except Exception as exc:  # a failing check means "not ready", never a crash
                ok, detail = False, {"error": str(exc)}
            body = json.dumps({"ready": ok, **detail}, sort_keys=True).encode() + b"\n"
            code, ctype = (200 if ok else 503), "application/json"
        else:
            code, body, ctype = 404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain"
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))]
        if code == 405:
            headers.append(("Allow", "GET, HEAD"))
        start_response(f"{code} {HTTPStatus(code).phrase}", headers)
        log.debug("http: %s %s %d", method, path, code)
        return [] if method == "HEAD" else [body]  # HEAD: the GET's headers, no body (waitress sends what it gets)
