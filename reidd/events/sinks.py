"""Event sinks: a JSONL file, a Redis Stream (with an on-disk spool) and a fan-out.

The Redis sink gives at-least-once delivery on the wire and exactly-once entries in the stream:
each event is written by a Lua script that checks ``<stream>:seen:<event_id>``, XADDs the event
(approximate MAXLEN, fields ``event_id``, ``type``, ``data``) and then sets the seen key with a TTL,
all atomically, so retrying after an ambiguous failure (a timeout after the server applied the
write) never duplicates. While Redis is unreachable events go to a durable :class:`Spool` and are
delivered first, in order, once Redis is back, also by a later process on the same spool folder.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import re
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from reidd.events.schema import event_to_json
from reidd.events.spool import Spool, errno_name, probe_free_block
from reidd.types import Event

log = logging.getLogger(__name__)

_EVENT_ID_RE = re.compile(rb'"event_id":"([0-9a-f]{32})"')


class EventSink(Protocol):
    """Where events go. ``publish`` never raises and returns quickly."""

    def publish(self, ev: Event) -> None: ...

    def flush(self, timeout: float = 10.0) -> bool: ...

    def close(self) -> None: ...


class JsonlSink:
    """Appends one canonical JSON line per event to ``path``, written straight to the file.

    Rotation-friendly: when the file is renamed or deleted (logrotate's default), the sink notices
    within ``check_every_s`` and reopens ``path``, so a long-running daemon's file can be rotated.
    A write that fails (a full disk) is cut off again, so the file never holds half a line; the failure
    is logged once, with the errno, until a write succeeds again, and counted in ``publish_failures``.
    An event whose id the file already holds (among its last ``remember`` ids) is not written again:
    a daemon restarted on the same files emits its events again, and the file keeps one line each.
    """

    #: event ids remembered to drop repeats (a restart on the same files emits its events again): the file's
    #: last ones at start, then every id written; 100k ids take about 6 MB
    remember = 100_000
    #: how much of an existing file's end is read at start for its ids
    scan_bytes = 32 << 20

    def __init__(self, path: str | Path, check_every_s: float = 5.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seen: OrderedDict[int, None] = OrderedDict()
        self._load_seen()
        self._fh = open(self.path, "ab", buffering=0)
        self.duplicates = 0  # events not written again: their id is in the file already
        self._lock = threading.Lock()
        self._check_every_s = check_every_s
        self._checked = time.monotonic()
        self._failing: str | None = None  # errno name while writes fail
        self._failed_since_ok = 0
        self.published = 0
        self.publish_failures = 0

    def _load_seen(self) -> None:
        try:
            if not stat.S_ISREG(os.stat(self.path).st_mode):
                return  # a FIFO, a device: nothing to read back
            with open(self.path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - self.scan_bytes))
                tail = fh.read(self.scan_bytes)
        except OSError:
            return
        if len(tail) < size:
            tail = tail.partition(b"\n")[2]  # the first line read may be cut
        for m in _EVENT_ID_RE.finditer(tail):
            self._remember(int(m.group(1), 16))

    def _remember(self, key: int) -> None:
        self._seen[key] = None
        while len(self._seen) > self.remember:
            self._seen.popitem(last=False)

    def _reopen_if_rotated(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._check_every_s and not self._failing:
            return
        self._checked = now
        try:
            same = os.stat(self.path).st_ino == os.fstat(self._fh.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            self._fh.close()
            self._fh = open(self.path, "ab", buffering=0)

    def _write(self, data: bytes) -> None:
        fd = self._fh.fileno()
        start = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                n = os.write(fd, view)
                if n <= 0:
                    raise OSError(errno.EIO, "write returned 0 bytes")
                view = view[n:]
        except OSError:
            if len(view) < len(data):  # part of the line went out: cut it off again
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    log.debug("JSONL sink %s: could not cut off a partial line", self.path, exc_info=True)
            raise

    def publish(self, ev: Event) -> None:
        try:
            line = (event_to_json(ev) + "\n").encode("utf-8")
        except ValueError as exc:  # this event, not the file
            self.publish_failures += 1
            log.error("JSONL sink %s: could not write event %s: %s", self.path, ev.event_id, exc)
            return
        try:
            key: int | None = int(ev.event_id, 16)
        except (TypeError, ValueError):
            key = None
        try:
            with self._lock:
                if key is not None and key in self._seen:
                    self.duplicates += 1
                    return
                self._reopen_if_rotated()
                if self._failing:  # not into the end of the last block of a full disk (see probe_free_block)
                    probe_free_block(self.path.parent)
                self._write(line)
                if key is not None:
                    self._remember(key)
                if self._failing:
                    log.warning("JSONL sink %s: writable again; %d event(s) were not written meanwhile",
                                self.path, self._failed_since_ok)
                    self._failing, self._failed_since_ok = None, 0
            self.published += 1
        except (OSError, ValueError) as exc:
            self.publish_failures += 1
            name = errno_name(exc) if isinstance(exc, OSError) else type(exc).__name__
            with self._lock:
                self._failed_since_ok += 1
                first = self._failing != name
                self._failing = name
            if first:  # once per failure state, not once per event
                log.error("JSONL sink %s: could not write event %s (%s: %s); not logged again until a write "
                          "succeeds", self.path, ev.event_id, name, getattr(exc, "strerror", None) or exc)

    def flush(self, timeout: float = 10.0) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


class MultiSink:
    """Publishes every event to each of ``sinks``; one failing sink does not stop the others."""

    def __init__(self, sinks: Iterable[EventSink]):
        self.sinks = list(sinks)

    def publish(self, ev: Event) -> None:
        for sink in self.sinks:
            try:
                sink.publish(ev)
            except Exception:  # a sink broke its contract; keep the others going
                log.exception("sink %s raised while publishing event %s", type(sink).__name__, ev.event_id)

    def flush(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        return all([sink.flush(max(0.0, deadline - time.monotonic())) for sink in self.sinks])

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("sink %s raised while closing", type(sink).__name__)


# KEYS[1] stream, KEYS[2] seen key; ARGV: ttl, maxlen, event_id, type, data, pubsub channel ("" = none).
# Check, append, then mark: an error in XADD leaves nothing written (scripts run atomically).
_PUBLISH_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
                      'event_id', ARGV[3], 'type', ARGV[4], 'data', ARGV[5])
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[6], ARGV[5]) end
return id
"""

_Item = tuple[str, str, str]  # event_id, type, canonical JSON
_STOP = object()


def _encode(item: _Item) -> bytes:
    return "\t".join(item).encode("utf-8")


def _decode(record: bytes) -> _Item:
    event_id, kind, data = record.decode("utf-8").split("\t", 2)
    return event_id, kind, data


def redis_client_factory(url: str, *, timeout_s: float = 2.0) -> Callable[[], Any]:
    """A factory of clients for :class:`RedisStreamSink`: bounded socket timeouts and no client-side retries
    (the sink retries itself, spooling meanwhile; redis-py's default retries would delay spooling)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    def make() -> Any:
        return redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )

    return make


class RedisStreamSink:
    """Publishes events to a Redis Stream from a background thread, spooling to disk while Redis is down.

    Attributes (also reported through ``on_metrics(name, value)``): ``published`` (entries added),
    ``duplicates`` (events the stream already had), ``publish_failures`` (failed delivery attempts),
    ``spooled`` (events written to the spool), ``refused`` (events not accepted: the spool's bound
    reached or its disk failing, the queue full; lost, logged as errors) and ``spool_depth`` (events
    waiting on disk; reported after every change, from the spool's one counter).

    A refusal is logged once per cause while the cause lasts, not once per event: a failing disk by the
    spool itself (``spool: disk full under DIR (ENOSPC): ...``, then ``spool: writable again ...``), the
    spool's bound once until it accepts again. While the spool cannot take events but Redis answers, the
    spool's backlog is delivered first and the new events after it, directly. :meth:`health` says whether
    events are being delivered, spooled or lost (readiness uses it).

    ``redis_client_factory`` should build clients with socket timeouts and without client-side retries
    (see :func:`redis_client_factory`): a hung server then costs one timeout before events are spooled.
    ``dedupe_ttl_s`` bounds how long an event id is remembered; the same event (same id) published again
    within it is counted in ``duplicates`` and not added.
    """

    def __init__(
        self,
        redis_client_factory: Callable[[], Any],
        stream: str,
        *,
        maxlen: int = 100_000,
        pubsub_channel: str | None = None,
        spool_dir: str | Path,
        spool_max_mb: float = 512,
        dedupe_ttl_s: int = 7 * 86400,
        on_metrics: Callable[[str, float], None] | None = None,
        queue_size: int = 10_000,
        batch_size: int = 256,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        close_timeout_s: float = 10.0,
        direct_drain_budget_s: float = 1.0,
    ):
        if not stream:
            raise ValueError("events.stream: must not be empty")
        if maxlen < 1 or dedupe_ttl_s < 1:
            raise ValueError("events: maxlen and dedupe_ttl_s must be >= 1")
        self.stream = stream
        self.maxlen = int(maxlen)
        self.pubsub_channel = pubsub_channel or ""
        self.dedupe_ttl_s = int(dedupe_ttl_s)
        self._factory = redis_client_factory
        self._on_metrics = on_metrics
        self._batch_size = batch_size
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._close_timeout_s = close_timeout_s
        self._direct_drain_budget_s = direct_drain_budget_s
        self._spool = Spool(spool_dir, max_bytes=int(spool_max_mb * 1024 * 1024))
        self._q: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._client: Any = None
        self._script: Any = None
        self._down = False
        self._retry_at = 0.0
        self._backoff = retry_initial_s
        self._failing_since: float | None = None  # monotonic start of the current run of failed deliveries
        self._last_error: str | None = None  # of the last failed delivery, while failing
        self._spool_at_bound = False  # the last append stopped at max_bytes and nothing was consumed since
        self._refusing: str | None = None  # "bound" while the spool's bound refuses events (logged once)
        self._refused_in_state = 0
        self._last_refusal_at: float | None = None
        self._last_refusal: tuple[str, str] | None = None  # (cause, why) of the last refusal
        self._last_refusal_log = 0.0
        self._step_error: str | None = None  # the worker's unexpected error while it repeats (logged once)
        self._step_failures = 0
        self._step_error_logged = 0.0
        self._stopping = threading.Event()
        self._idle = threading.Condition()
        self._counter_lock = threading.Lock()
        self.published = 0
        self.duplicates = 0
        self.publish_failures = 0
        self.spooled = 0
        self.refused = 0
        if len(self._spool):
            log.info("event spool %s holds %d events from an earlier run", spool_dir, len(self._spool))
        self._thread = threading.Thread(target=self._run, name=f"events-redis-{stream}", daemon=True)
        self._thread.start()
        self._metric("spool_depth", len(self._spool))

    # ------------------------------------------------------------------ caller side
    @property
    def spool_depth(self) -> int:
        """Events waiting in the on-disk spool (the spool's own counter: the one source of this number)."""
        return len(self._spool)

    @property
    def spool_dir(self) -> Path:
        return self._spool.directory

    def health(self) -> dict[str, Any]:
        """Where events go now, for readiness and operators (a snapshot; cheap, takes no lock):

        ``delivering`` (the last delivery attempt succeeded, or none failed), ``publish_failing_s`` (for
        how long deliveries have failed, else None) and ``last_publish_error``; ``spool_accepting`` (the
        spool takes events: its disk writable as far as the last append knows, its bound not reached) and
        ``spool_error`` (why not, e.g. ``disk full under /x (ENOSPC)``); ``spool_depth``; ``refused`` (in
        all), ``last_refusal`` and ``last_refusal_s_ago``; ``worker_alive`` (the delivery thread runs).
        """
        now = time.monotonic()
        spool = self._spool
        spool_error = spool.write_error_text()
        if spool_error is None and self._spool_at_bound:
            spool_error = (f"spool {spool.directory} full ({spool.disk_bytes} of {spool.max_bytes} bytes, "
                           "events.spool_max_mb)")
        since, last_at, last = self._failing_since, self._last_refusal_at, self._last_refusal
        return {
            "delivering": since is None,
            "publish_failing_s": None if since is None else round(now - since, 3),
            "last_publish_error": self._last_error if since is not None else None,
            "spool_dir": str(spool.directory),
            "spool_depth": len(spool),
            "spool_accepting": spool_error is None,
            "spool_error": spool_error,
            "refused": self.refused,
            "last_refusal": None if last is None else last[1],
            "last_refusal_cause": None if last is None else last[0],
            "last_refusal_s_ago": None if last_at is None else round(now - last_at, 3),
            "worker_alive": self._thread.is_alive(),
        }

    def publish(self, ev: Event) -> None:
        """Queue ``ev`` for delivery; never raises (problems are logged and counted)."""
        try:
            item = (ev.event_id, ev.type, event_to_json(ev))
        except (ValueError, TypeError) as exc:
            self._refuse(1, f"event {getattr(ev, 'event_id', '?')} cannot be serialised: {exc}", "invalid")
            return
        if self._stopping.is_set():
            self._refuse(1, "the sink is closed", "closed")
            return
        try:
            self._q.put(item, timeout=1.0)
        except queue.Full:
            self._refuse(1, f"the in-memory queue is full ({self._q.maxsize} events)", "queue")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every published event is in the stream; False if some still wait after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._q.unfinished_tasks or len(self._spool):
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(left, 0.05))
        return True

    def close(self) -> None:
        """Deliver what can be delivered within ``close_timeout_s``; whatever remains stays in the spool."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        try:
            self._q.put_nowait(_STOP)
        except queue.Full:
            pass
        self._thread.join(self._close_timeout_s)
        if self._thread.is_alive():
            log.error("event sink for stream %s did not stop within %.1fs", self.stream, self._close_timeout_s)
            return
        while items := self._take(0.0):  # published while the worker was stopping: keep them on disk
            try:
                self._to_spool(items)
            finally:
                self._done(len(items))
        self._spool.close()
        self._drop_client()

    # ------------------------------------------------------------------ worker
    def _metric(self, name: str, value: float) -> None:
        if self._on_metrics is not None:
            try:
                self._on_metrics(name, float(value))
            except Exception:
                log.exception("on_metrics callback failed for %s", name)

    def _count(self, name: str, n: int) -> None:
        with self._counter_lock:
            value = getattr(self, name) + n
            setattr(self, name, value)
        self._metric(name, value)

    def _refuse(self, n: int, why: str, cause: str) -> None:
        """Count ``n`` lost events. ``cause``: ``disk`` (the spool logs its state once), ``bound`` (logged
        once until the spool accepts again), else (queue, closed, invalid, error) at most every 5 s."""
        self._count("refused", n)
        now = time.monotonic()
        self._last_refusal_at, self._last_refusal = now, (cause, why)
        if cause == "disk":  # the spool logged the state once, with its folder and errno
            return
        if cause == "bound":
            with self._counter_lock:
                first = self._refusing != "bound"
                self._refusing = "bound"
                self._refused_in_state = n if first else self._refused_in_state + n
            if first:
                log.error("event sink %s refused %d event(s): %s; refusing until it has room again (not logged "
                          "per event; %d refused so far)", self.stream, n, why, self.refused)
            return
        if now - self._last_refusal_log >= 5.0:
            self._last_refusal_log = now
            log.error("event sink %s refused %d event(s): %s (%d refused so far)", self.stream, n, why, self.refused)

    def _take(self, timeout: float) -> list[_Item]:
        """Up to ``batch_size`` queued items, waiting at most ``timeout`` for the first."""
        items: list[_Item] = []
        try:
            first = self._q.get(timeout=timeout) if timeout > 0 else self._q.get_nowait()
        except queue.Empty:
            return items
        while True:
            if first is _STOP:
                self._q.task_done()
            else:
                items.append(first)
            if len(items) >= self._batch_size:
                return items
            try:
                first = self._q.get_nowait()
            except queue.Empty:
                return items

    def _done(self, n: int) -> None:
        for _ in range(n):
            self._q.task_done()

    def _run(self) -> None:
        stop_deadline: float | None = None
        while True:
            if self._stopping.is_set() and stop_deadline is None:
                stop_deadline = time.monotonic() + self._close_timeout_s
            try:
                self._step()
                if self._step_error is not None:
                    log.info("event sink for stream %s: working again after %d failed attempt(s)", self.stream,
                             self._step_failures)
                    self._step_error, self._step_failures = None, 0
            except Exception as exc:  # e.g. the spool's disk failing on a read: keep the thread alive, retry
                key = f"{type(exc).__name__}: {exc}"
                self._step_failures += 1
                now = time.monotonic()
                if key != self._step_error:  # once per distinct error, not once per second
                    self._step_error, self._step_error_logged = key, now
                    log.exception("event sink for stream %s: unexpected error; retrying every second", self.stream)
                elif now - self._step_error_logged >= 60.0:
                    self._step_error_logged = now
                    log.error("event sink for stream %s: still failing (%d attempts): %s", self.stream,
                              self._step_failures, key)
                time.sleep(1.0)
            with self._idle:
                self._idle.notify_all()
            if stop_deadline is not None and self._q.empty():
                if not len(self._spool) or self._down or time.monotonic() >= stop_deadline:
                    return

    def _may_try_redis(self) -> bool:
        return not self._down or time.monotonic() >= self._retry_at

    def _step(self) -> None:
        """Move queued events to Redis (or the spool while it is not empty or Redis is down); drain one spool batch."""
        now = time.monotonic()
        if self._stopping.is_set() or (len(self._spool) and (not self._down or now >= self._retry_at)):
            timeout = 0.0
        elif self._down:
            timeout = min(max(self._retry_at - now, 0.0), 0.2)
        else:
            timeout = 0.2
        items = self._take(timeout)
        if items:
            try:
                if len(self._spool) or self._down or not self._deliver(items):
                    self._to_spool(items)
            except Exception as exc:
                self._refuse(len(items), f"unexpected error: {type(exc).__name__}: {exc}", "error")
                raise
            finally:
                self._done(len(items))
        if len(self._spool) and self._may_try_redis():
            self._drain(max_batches=1)

    def _drain(self, max_batches: int | None = None, budget_s: float | None = None) -> bool:
        """Deliver spooled batches in order (at most ``max_batches`` / ``budget_s``); True once it is empty."""
        deadline = None if budget_s is None else time.monotonic() + budget_s
        batches = 0
        while len(self._spool):
            batch = self._spool.peek(self._batch_size)
            if not batch:
                break
            if not self._deliver([_decode(r) for r in batch]):
                return False
            self._spool.commit(len(batch))
            self._spool_at_bound = False
            self._metric("spool_depth", len(self._spool))
            if not len(self._spool):
                log.info("event spool drained into stream %s", self.stream)
            batches += 1
            if (max_batches is not None and batches >= max_batches) or (
                    deadline is not None and time.monotonic() >= deadline):
                break
        return not len(self._spool)

    def _append(self, items: list[_Item]) -> int:
        """Write ``items`` to the spool; the count written (a prefix)."""
        n = self._spool.append_many([_encode(it) for it in items])
        if n:
            self._count("spooled", n)
        self._metric("spool_depth", len(self._spool))
        if n == len(items):
            self._spool_at_bound = False
            if self._refusing is not None:
                log.warning("event spool %s accepts events again; %d were refused while it was full",
                            self._spool.directory, self._refused_in_state)
                self._refusing, self._refused_in_state = None, 0
        elif self._spool.last_refusal == "bound":
            self._spool_at_bound = True
        return n

    def _to_spool(self, items: list[_Item]) -> None:
        rest = items[self._append(items):]
        if rest and self._may_try_redis():
            # the spool cannot take them but Redis may: deliver its backlog first, then these (in order)
            if self._drain(budget_s=self._direct_drain_budget_s) and self._deliver(rest):
                return
            rest = rest[self._append(rest):]  # draining may have made room
        if not rest:
            return
        if self._spool.last_refusal == "error":
            self._refuse(len(rest), f"the spool cannot write: {self._spool.write_error_text()}", "disk")
        else:
            self._refuse(len(rest), f"the spool {self._spool.directory} is full ({self._spool.disk_bytes} of "
                         f"{self._spool.max_bytes} bytes, events.spool_max_mb)", "bound")

    def _drop_client(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            except Exception:
                log.debug("closing the Redis client failed", exc_info=True)
        self._client, self._script = None, None

    def _deliver(self, items: list[_Item]) -> bool:
        """Send ``items`` in order in one pipeline; on any failure mark Redis down and return False."""
        try:
            if self._client is None:
                self._client = self._factory()
                self._script = self._client.register_script(_PUBLISH_LUA)
            pipe = self._client.pipeline(transaction=False)
            for event_id, kind, data in items:
                keys = [self.stream, f"{self.stream}:seen:{event_id}"]
                args = [self.dedupe_ttl_s, self.maxlen, event_id, kind, data, self.pubsub_channel]
                self._script(keys=keys, args=args, client=pipe)
            results = pipe.execute()
        except Exception as exc:  # connection refused, timeout, LOADING, ... : retry later from the spool
            self._count("publish_failures", 1)
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            self._last_error = f"{type(exc).__name__}: {exc}"[:300]
            if not self._down:
                log.warning("delivery to Redis stream %s failed (%s: %s); spooling events to %s and retrying",
                            self.stream, type(exc).__name__, exc, self._spool.directory)
            self._down = True
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self._retry_max_s)
            self._drop_client()
            return False
        added = sum(1 for r in results if r)
        self._count("published", added)
        if len(items) - added:
            self._count("duplicates", len(items) - added)
        if self._down:
            log.info("Redis reachable again for stream %s", self.stream)
        self._down = False
        self._failing_since, self._last_error = None, None
        self._backoff = self._retry_initial_s
        return True
