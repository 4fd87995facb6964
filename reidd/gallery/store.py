"""The tracklet gallery: Redis is the source of truth, a FAISS :class:`VectorIndex` the in-memory copy.

Redis key layout (``<ns>`` is ``gallery.namespace``; every key carries it):

``<ns>:gallery:e:<tracklet_id>`` (hash, one per entry, expires ``ttl_s`` wall seconds after it is written)
    ``emb`` raw little-endian float32 bytes of the L2-normalised embedding, ``dim`` its length,
    ``cam`` camera id, ``t0``/``t1`` first/last timestamp (camera timeline), ``gid`` global id,
    ``attrs`` JSON object (class, box count, ...), ``dmn`` id of the daemon that wrote it,
    ``exp`` wall-clock epoch second at which Redis drops the key.
``<ns>:gallery:adds`` (stream, approximate MAXLEN ``min(max_entries, 100000)``, at least 1000)
    one message per change: ``op=add`` (``tid``, ``dmn``) or ``op=gid`` (``tid``, ``gid``, ``dmn``).
    Other daemons tail it with :meth:`Gallery.sync`; a daemon that fell so far behind that the
    messages it had not read were trimmed reloads everything from the hashes instead.
``<ns>:global_id`` (string) the last global id handed out, advanced with INCR.
``<ns>:global_id:epoch`` (string) the first id of the current *id epoch*.

Global ids never repeat, even when Redis forgets (a FLUSHALL, a restart without persistence, a
failover to an empty replica). The counter lives with an epoch key; a missing epoch means the data is
gone (or this is the first start), and the next caller starts a new epoch whose first id is above
every id handed out before: the time in microseconds since 1970 (the later of Redis's clock and the
daemon's), and above the highest id the caller holds (its :attr:`Gallery.high_water`). Every
allocation takes Redis more than a microsecond, so the counter cannot run ahead of that clock and a
later epoch always starts above an earlier one's ids (while clocks do not go back); ids stay below
2**53 (safe as JSON numbers) until the year 2255. A counter found below an id the daemon holds (a
stale backup restored, a failover to a lagging replica) is raised above it. A private replay Redis
(``time_ids=False``) starts at 1 instead, so that a replay is reproducible.

A daemon notices the loss at its next sync or allocation (epoch gone or changed, counter raised): it logs
it once at WARNING, counts it (``stats["data_loss"]``), writes its own live entries back (hashes and
``add`` messages, so the other daemons can match against them again; they write back theirs) and
reports itself degraded (:meth:`Gallery.health`) until that is done and ``LOSS_SETTLE_S`` have passed.

Time. An entry lives on the *camera timeline* of its ``last_ts`` (wall epoch seconds for live
cameras, media time for files): it leaves the in-memory index once ``clock() > last_ts + ttl_s``,
where ``clock`` is the :class:`reidd.context.Clock` given to :class:`Gallery` (the wall clock for live
streams, the media clock for files). Redis TTLs can only be wall seconds; they are storage garbage collection. With the wall
clock, both agree (a tracklet is written moments after its ``last_ts``), and ``sync`` also drops
entries whose Redis key is gone (expired or deleted by someone else: a few keys are audited with
EXISTS per sync). With any other clock (replay) only the media-time rule applies, so a replay that
runs slower than real time does not lose entries mid-run when their wall TTL runs out.

Index builds: with the wall clock, rebuilds (the switch from exact search to IVF, IVF retrains, HNSW
compaction) run on a thread beside the index in use, which keeps answering, and are swapped in when
done; with any other clock they run inside the call that needs them, so that a replay is reproducible.

Bounds: at most ``max_entries`` in memory; past it the entry with the oldest ``last_ts`` leaves the
index (it stays in Redis until its TTL) and ``stats["evicted"]`` counts it.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import redis

from reidd.config import GalleryConfig
from reidd.context import Clock
from reidd.gallery.index import VectorIndex

log = logging.getLogger(__name__)

_SCAN_BATCH = 1000
_READ_BATCH = 1000
_AUDIT_BATCH = 256
#: after a data loss, readiness stays degraded this long (other daemons notice at their next sync, about
#: a second, and write their entries back)
LOSS_SETTLE_S = 10.0
# KEYS: counter, epoch. ARGV: floor for a new epoch (the caller's clock in microseconds, 0 = none), the
# highest id the caller holds, '1' to allocate an id (else only make sure an epoch exists), '1' to also
# floor a new epoch at Redis's own clock. Returns {id or 0, epoch, 1 if an epoch started, 1 if the counter
# was raised to the caller's highest id}.
_GLOBAL_ID = """
local held = tonumber(ARGV[2])
local epoch = redis.call('GET', KEYS[2])
local started, raised = 0, 0
if not epoch then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    epoch = '1'  -- a counter written before epochs existed: it goes on counting
  else
    local base = math.max(tonumber(ARGV[1]), held + 1, 1)
    if ARGV[4] == '1' then
      local t = redis.call('TIME')
      base = math.max(base, tonumber(t[1]) * 1000000 + tonumber(t[2]))
    end
    epoch = string.format('%d', base)
    redis.call('SET', KEYS[1], string.format('%d', base - 1))
    started = 1
  end
  redis.call('SET', KEYS[2], epoch)
end
if tonumber(redis.call('GET', KEYS[1]) or '0') < held then
  redis.call('SET', KEYS[1], string.format('%d', held))
  raised = 1
end
local id = 0
if ARGV[3] == '1' then
  id = redis.call('INCR', KEYS[1])
end
return {id, tonumber(epoch), started, raised}
"""
_SET_GID_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'gid', ARGV[1])
  return 1
end
return 0
"""


@dataclass
class GalleryEntry:
    """One tracklet in the gallery."""

    tracklet_id: str
    camera_id: str
    first_ts: float
    last_ts: float
    embedding: np.ndarray
    global_id: int
    attributes: dict = field(default_factory=dict)  # e.g. cls, num_boxes, daemon id


@dataclass(slots=True)
class _Meta:
    """What memory keeps of an entry besides its vector (the vector lives in the index)."""

    camera_id: str
    first_ts: float
    last_ts: float
    global_id: int
    attributes: dict
    wall_exp: float
    seq: int
    own: bool = False  # written by this daemon (written back after a data loss)


def _stream_id(value: bytes | str) -> tuple[int, int]:
    text = value.decode() if isinstance(value, bytes) else value
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


class Gallery:
    """Tracklet embeddings shared by all daemons on one Redis, searched in a local FAISS index."""

    def __init__(
        self,
        redis_client: redis.Redis,
        dim: int,
        cfg: GalleryConfig,
        *,
        clock: Clock | None = None,
        daemon_id: str | None = None,
        time_ids: bool = True,
    ) -> None:
        """``time_ids``: a new id epoch starts at the clock's microseconds (ids never repeat after Redis
        loses its data); False (a replay's private Redis) starts at 1 above the highest id held."""
        if dim < 1:
            raise ValueError(f"Gallery: dim must be >= 1, got {dim}")
        if redis_client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("Gallery: the Redis client must use decode_responses=False (embeddings are raw bytes)")
        self.r = redis_client
        self.dim = dim
        self.cfg = cfg
        self.daemon_id = daemon_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        ns = cfg.namespace
        self.entry_prefix = f"{ns}:gallery:e:"
        self.stream_key = f"{ns}:gallery:adds"
        self.global_id_key = f"{ns}:global_id"
        self.epoch_key = f"{ns}:global_id:epoch"
        self.time_ids = time_ids
        self.stream_maxlen = max(1000, min(cfg.max_entries, 100_000))
        self._clock = clock or Clock(wall=True)
        self._wall = self._clock.wall
        self._lock = threading.RLock()
        self._index = self._new_index()
        self._meta: dict[str, _Meta] = {}
        self._per_camera: Counter[str] = Counter()  # entries in memory per camera
        self._by_time: list[tuple[float, int, str]] = []  # (last_ts, seq, tid), lazy deletion
        self._by_wall_exp: list[tuple[float, int, str]] = []  # (wall expiry, seq, tid), wall clock only
        self._seq = itertools.count()
        self._audit: list[str] = []
        self._set_gid = self.r.register_script(_SET_GID_IF_EXISTS)
        self._global_id = self.r.register_script(_GLOBAL_ID)
        #: counters for metrics: added (by this daemon), synced (from others), expired, evicted,
        #: missing (key gone from Redis), skipped (unreadable or other-dimension entries), resyncs,
        #: data_loss (Redis lost the gallery and the id counter), restored (own entries written back)
        self.stats: dict[str, int] = dict.fromkeys(
            ("added", "synced", "expired", "evicted", "missing", "skipped", "resyncs", "data_loss", "restored"), 0
        )
        #: the first id of the id epoch in use (None until the first call to Redis that reads it)
        self.epoch: int | None = None
        #: the highest global id this daemon has handed out or seen in an entry
        self.high_water = 0
        self._restore_pending = False
        self._loss_at: float | None = None  # monotonic time of the last data loss
        self._loss_what = ""
        self._last_id = self._stream_tip()

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self._meta)

    @property
    def index_kind(self) -> str:
        """The FAISS index kind in use right now ("flat", "hnsw" or "ivf")."""
        return self._index.kind_in_use

    def load(self) -> int:
        """Rebuild memory from Redis (SCAN of this namespace's entries); returns how many were loaded."""
        tip = self._stream_tip()
        keep: list[tuple[float, str]] = []  # min-heap of the newest max_entries by last_ts
        found: dict[str, tuple[_Meta, np.ndarray]] = {}
        now = self._clock()
        batch: list[bytes] = []

        def flush() -> None:
            pipe = self.r.pipeline(transaction=False)
            for key in batch:
                pipe.hgetall(key)
            for key, raw in zip(batch, pipe.execute()):
                parsed = self._parse(_text(key)[len(self.entry_prefix) :], raw)
                if parsed is None:
                    continue
                tid, meta, emb = parsed
                if tid in found or now > meta.last_ts + self.cfg.ttl_s:
                    continue  # SCAN may return a key twice
                found[tid] = (meta, emb)
                heapq.heappush(keep, (meta.last_ts, tid))
                if len(keep) > self.cfg.max_entries:
                    _, old = heapq.heappop(keep)
                    del found[old]
            batch.clear()

        for key in self.r.scan_iter(match=f"{_glob_escape(self.entry_prefix)}*", count=_SCAN_BATCH):
            batch.append(key)
            if len(batch) >= _SCAN_BATCH:
                flush()
        if batch:
            flush()
        order = sorted(found, key=lambda t: (found[t][0].last_ts, t))
        with self._lock:
            self._reset()
            if order:
                self._index.add(order, np.stack([found[t][1] for t in order]))
                for tid in order:
                    self._remember(tid, found[tid][0])
            self._last_id = tip
        self._ids(allocate=False)  # read (or start) the id epoch, above every id just loaded
        return len(order)

    def add(self, entry: GalleryEntry) -> None:
        """Write ``entry`` to Redis (hash + TTL + stream message) and add it to the local index."""
        emb = self._check_embedding(entry.embedding, entry.tracklet_id)
        if not entry.tracklet_id or not isinstance(entry.tracklet_id, str):
            raise ValueError(f"GalleryEntry.tracklet_id must be a non-empty string, got {entry.tracklet_id!r}")
        try:
            attrs = json.dumps(entry.attributes, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"GalleryEntry.attributes of {entry.tracklet_id}: not JSON-serialisable: {exc}") from None
        ttl_ms = max(1, int(round(self.cfg.ttl_s * 1000)))
        wall_exp = time.time() + ttl_ms / 1000
        meta = _Meta(
            entry.camera_id,
            float(entry.first_ts),
            float(entry.last_ts),
            int(entry.global_id),
            dict(entry.attributes),
            wall_exp,
            0,
            own=True,
        )
        pipe = self.r.pipeline(transaction=True)
        self._write(pipe, entry.tracklet_id, meta, emb, attrs, ttl_ms)
        pipe.execute()
        with self._lock:
            self.high_water = max(self.high_water, meta.global_id)
            if self._put(entry.tracklet_id, meta, emb):
                self.stats["added"] += 1

    def _write(self, pipe, tid: str, meta: _Meta, emb: np.ndarray, attrs: str, ttl_ms: int) -> None:
        """Queue the commands that store one entry: its hash, its TTL and the ``add`` message."""
        key = self.entry_prefix + tid
        pipe.hset(
            key,
            mapping={
                "emb": emb.astype("<f4").tobytes(),
                "dim": self.dim,
                "cam": meta.camera_id,
                "t0": repr(meta.first_ts),
                "t1": repr(meta.last_ts),
                "gid": meta.global_id,
                "attrs": attrs,
                "dmn": self.daemon_id,
                "exp": repr(meta.wall_exp),
            },
        )
        pipe.pexpire(key, ttl_ms)
        pipe.xadd(
            self.stream_key,
            {"op": "add", "tid": tid, "dmn": self.daemon_id},
            maxlen=self.stream_maxlen,
            approximate=True,
        )

    def sync(self) -> int:
        """Pick up other daemons' changes and drop expired entries; returns how many entries changed."""
        changes = 0
        if self._restore_pending:
            changes += self._restore_own()
        while True:
            pipe = self.r.pipeline(transaction=True)  # one atomic view of the stream
            pipe.get(self.epoch_key)
            pipe.xrange(self.stream_key, "-", "+", count=1)
            pipe.xlen(self.stream_key)
            pipe.xread({self.stream_key: self._last_id}, count=_READ_BATCH)
            epoch, first, length, read = pipe.execute()
            if self.epoch is not None and (epoch is None or int(epoch) != self.epoch):
                # Redis forgot (or another daemon noticed first and began a new epoch): the stream we
                # were reading is gone too, so read the new one from its start
                gone = "gone" if epoch is None else f"replaced by {int(epoch)}"
                self._ids(allocate=False, noticed=f"the id epoch {self.epoch} is {gone}")
                changes += self._restore_own()
                self._last_id = "0-0"
                continue
            # Messages after the last one read were trimmed away: the last one read is gone (trimming
            # removes the oldest first), or, before anything was read, the stream has been trimmed.
            if (
                first
                and _stream_id(first[0][0]) > _stream_id(self._last_id)
                and (self._last_id != "0-0" or length >= self.stream_maxlen)
            ):
                self.stats["resyncs"] += 1
                log.warning("gallery: fell behind the %s stream; reloading from Redis", self.stream_key)
                return self.load()
            messages = read[0][1] if read else []
            changes += self._apply(messages)
            if len(messages) < _READ_BATCH:
                break
        return changes + self._expire()

    def search(
        self, vec: np.ndarray, k: int, *, exclude_camera: str | None = None
    ) -> list[tuple[GalleryEntry, float]]:
        """The ``k`` most similar live entries (best first) as (entry, cosine similarity) pairs."""
        if k < 1:
            raise ValueError(f"Gallery.search: k must be >= 1, got {k}")
        q = self._check_embedding(vec, "query")
        with self._lock:
            n = len(self._index)
            if n == 0:
                return []
            now = self._clock()
            ttl = self.cfg.ttl_s
            # no more hits can exist than entries of the other cameras: without this bound a quiet
            # gallery (few entries elsewhere) made every query search the whole index
            target = min(k, len(self._meta) - (self._per_camera[exclude_camera] if exclude_camera else 0))
            if target <= 0:
                return []
            want = k if exclude_camera is None else min(n, max(2 * k, k + 16))
            while True:
                sims, ids = self._index.search(q, want)
                hits: list[tuple[str, float]] = []
                for tid, sim in zip(ids[0], sims[0].tolist()):
                    meta = self._meta[tid]
                    if meta.camera_id == exclude_camera or now > meta.last_ts + ttl:
                        continue
                    hits.append((tid, sim))
                    if len(hits) == target:
                        break
                if len(hits) == target or want >= n:
                    break
                want = min(n, want * 4)
            if not hits:
                return []
            vectors = self._index.vectors([tid for tid, _ in hits])
            return [(self._entry(tid, vectors[i]), sim) for i, (tid, sim) in enumerate(hits)]

    def get(self, tracklet_id: str) -> GalleryEntry | None:
        """The entry from memory, else from Redis (e.g. evicted from memory but not expired), else None."""
        with self._lock:
            if tracklet_id in self._meta:
                return self._entry(tracklet_id, self._index.vectors([tracklet_id])[0])
        parsed = self._parse(tracklet_id, self.r.hgetall(self.entry_prefix + tracklet_id))
        if parsed is None:
            return None
        tid, meta, emb = parsed
        return GalleryEntry(tid, meta.camera_id, meta.first_ts, meta.last_ts, emb, meta.global_id, meta.attributes)

    def set_global_id(self, tracklet_id: str, global_id: int) -> None:
        """Set an entry's global id in Redis (if the key still exists) and in memory, and tell the others.

        Raises KeyError when the entry is neither in memory nor in Redis.
        """
        gid = int(global_id)
        key = self.entry_prefix + tracklet_id
        pipe = self.r.pipeline(transaction=True)
        self._set_gid(keys=[key], args=[gid], client=pipe)
        pipe.xadd(
            self.stream_key,
            {"op": "gid", "tid": tracklet_id, "gid": gid, "dmn": self.daemon_id},
            maxlen=self.stream_maxlen,
            approximate=True,
        )
        in_redis = bool(pipe.execute()[0])
        with self._lock:
            self.high_water = max(self.high_water, gid)
            meta = self._meta.get(tracklet_id)
            if meta is not None:
                meta.global_id = gid
        if meta is None and not in_redis:
            raise KeyError(f"gallery: unknown tracklet {tracklet_id!r}")

    def allocate_global_id(self) -> int:
        """A new global id, unique across every daemon sharing this Redis and never handed out before, even
        when Redis lost its data (see the module docstring: id epochs)."""
        return self._ids(allocate=True)

    def health(self) -> dict:
        """``state`` ``ok``, or ``degraded`` (with a ``reason``) after Redis lost the gallery: until this
        daemon's entries are written back and ``LOSS_SETTLE_S`` have passed. Also ``data_losses`` (since
        start) and ``epoch`` (the first id of the current id epoch)."""
        out: dict = {"state": "ok", "data_losses": self.stats["data_loss"], "epoch": self.epoch}
        if self._loss_at is not None:
            ago = time.monotonic() - self._loss_at
            if self._restore_pending or ago < LOSS_SETTLE_S:
                out["state"] = "degraded"
                what = "writing this daemon's entries back" if self._restore_pending else (
                    "entries written back; other daemons are writing theirs")
                out["reason"] = f"Redis lost the gallery {ago:.0f} s ago ({self._loss_what}): {what}"
        return out

    def _ids(self, *, allocate: bool, noticed: str = "") -> int:
        """Run the id script (allocate one id, or only make sure an epoch exists) and act on what it found:
        a new epoch after one was known, or a counter below an id held, is a data loss."""
        floor = int(time.time() * 1_000_000) if self.time_ids else 0
        with self._lock:
            held = self.high_water
        gid, epoch, started, raised = (int(v) for v in self._global_id(
            keys=[self.global_id_key, self.epoch_key],
            args=[floor, held, "1" if allocate else "0", "1" if self.time_ids else "0"]))
        known, self.epoch = self.epoch, epoch
        what = noticed
        if raised:
            what = what or f"the id counter was below id {held}, which this daemon holds"
        elif known is not None and epoch != known:
            what = what or f"the id epoch {known} is gone"
        if what:
            self._data_lost(what, epoch, started)
        elif started:
            log.info("global ids: id epoch %d begins (no epoch in Redis: a first start, or Redis lost its data "
                     "before this daemon started); ids continue above every id handed out before", epoch)
        if allocate:
            with self._lock:
                self.high_water = max(self.high_water, gid)
        return gid

    def _data_lost(self, what: str, epoch: int, started: int) -> None:
        with self._lock:
            own = sum(1 for m in self._meta.values() if m.own)
            self.stats["data_loss"] += 1
            self._restore_pending = True
            self._loss_at = time.monotonic()
            self._loss_what = what
        log.warning(
            "Redis lost reidd's data (%s; a FLUSHALL, a restart without persistence or a failover to an empty "
            "replica): global ids continue from epoch %d%s, above every id handed out before, so no id names two "
            "vehicles; writing this daemon's %d live gallery entries back; readiness is degraded until done",
            what, epoch, " (begun by this daemon)" if started else "", own)

    def _restore_own(self) -> int:
        """Write this daemon's live entries back to Redis after a data loss; returns how many."""
        with self._lock:
            own = [(tid, m) for tid, m in self._meta.items() if m.own]
            vectors = self._index.vectors([t for t, _ in own]) if own else None
        now = time.time()
        written = 0
        for start in range(0, len(own), _READ_BATCH):
            pipe = self.r.pipeline(transaction=False)
            for i in range(start, min(start + _READ_BATCH, len(own))):
                tid, meta = own[i]
                ttl_ms = int((meta.wall_exp - now) * 1000)
                if ttl_ms <= 0:
                    continue  # its Redis TTL would have run out anyway
                self._write(pipe, tid, meta, vectors[i], json.dumps(meta.attributes, sort_keys=True), ttl_ms)
                written += 1
            pipe.execute()
        with self._lock:
            self._restore_pending = False
            self.stats["restored"] += written
        log.warning("gallery: %d live entries of this daemon written back to Redis after the data loss", written)
        return written

    def close(self) -> None:
        """Free the in-memory index. The Redis client belongs to the caller and stays open."""
        with self._lock:
            self._reset()

    # ------------------------------------------------------------------ internals
    def _new_index(self) -> VectorIndex:
        # Live (wall clock): rebuilds (the switch to IVF, retrains, compaction) run beside the index in
        # use and bulk HNSW inserts use every core, so matching never waits for them; arrival order is
        # not reproducible anyway. Replay: rebuilds happen in the call that triggers them, HNSW on one
        # thread, so the same input gives the same matches.
        threads = (os.cpu_count() or 1) if self._wall else 1
        # efSearch defaults to 256 rather than 64: +0.2 ms per query for recall@10 0.84 -> 0.93 at 1e5
        # entries (scripts/bench_gallery.py, 256-d clustered data); queries are few, misses are costly.
        return VectorIndex(
            self.dim, kind=self.cfg.index, exact_max=self.cfg.exact_max, hnsw_m=self.cfg.hnsw_m,
            ef_search=self.cfg.ef_search, ef_construction=self.cfg.ef_construction, build_threads=threads,
            nlist=self.cfg.nlist, nprobe=self.cfg.nprobe, background=self._wall,
        )

    def _reset(self) -> None:
        old = getattr(self, "_index", None)
        if old is not None:
            old.close()
        self._index = self._new_index()
        self._meta.clear()
        self._per_camera.clear()
        self._by_time.clear()
        self._by_wall_exp.clear()
        self._audit.clear()

    def _stream_tip(self) -> str:
        last = self.r.xrevrange(self.stream_key, "+", "-", count=1)
        return _text(last[0][0]) if last else "0-0"

    def _check_embedding(self, vec: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(vec, dtype=np.float32).reshape(-1)
        if x.shape[0] != self.dim:
            raise ValueError(f"gallery: embedding of {what} has {x.shape[0]} values, expected {self.dim}")
        norm = float(np.linalg.norm(x))
        if not math.isfinite(norm) or norm == 0.0:
            raise ValueError(f"gallery: embedding of {what} is zero or not finite")
        return (x / norm).astype(np.float32)

    def _parse(self, tid: str, raw: dict[bytes, bytes]) -> tuple[str, _Meta, np.ndarray] | None:
        """Decode one entry hash; None (counted as skipped) when it is missing or unusable."""
        if not raw:
            return None
        try:
            emb = np.frombuffer(raw[b"emb"], dtype="<f4").astype(np.float32)
            if emb.shape[0] != self.dim or not np.isfinite(emb).all() or not emb.any():
                raise ValueError(f"embedding has {emb.shape[0]} values, expected {self.dim}")
            meta = _Meta(
                _text(raw[b"cam"]),
                float(raw[b"t0"]),
                float(raw[b"t1"]),
                int(raw[b"gid"]),
                json.loads(raw.get(b"attrs", b"{}")),
                float(raw.get(b"exp", b"inf")),
                0,
                own=_text(raw.get(b"dmn")) == self.daemon_id,
            )
        except (KeyError, ValueError, TypeError) as exc:
            self.stats["skipped"] += 1
            log.warning("gallery: skipping unreadable entry %s%s: %s", self.entry_prefix, tid, exc)
            return None
        return tid, meta, emb

    def _entry(self, tid: str, emb: np.ndarray) -> GalleryEntry:
        m = self._meta[tid]
        return GalleryEntry(tid, m.camera_id, m.first_ts, m.last_ts, emb, m.global_id, dict(m.attributes))

    def _remember(self, tid: str, meta: _Meta) -> None:
        meta.seq = next(self._seq)
        self.high_water = max(self.high_water, meta.global_id)
        old = self._meta.get(tid)
        if old is not None:
            self._per_camera[old.camera_id] -= 1
        self._per_camera[meta.camera_id] += 1
        self._meta[tid] = meta
        heapq.heappush(self._by_time, (meta.last_ts, meta.seq, tid))
        if self._wall:
            heapq.heappush(self._by_wall_exp, (meta.wall_exp, meta.seq, tid))

    def _put(self, tid: str, meta: _Meta, emb: np.ndarray) -> bool:
        """Insert or replace in memory, then enforce max_entries; False if already expired by the clock."""
        if self._clock() > meta.last_ts + self.cfg.ttl_s:
            self.stats["expired"] += 1
            return False
        self._index.add([tid], emb[None, :])
        self._remember(tid, meta)
        while len(self._meta) > self.cfg.max_entries:
            victim = self._pop_valid(self._by_time)
            self._forget([victim])
            self.stats["evicted"] += 1
        self._compact_heaps()
        return True

    def _pop_valid(self, heap: list[tuple[float, int, str]]) -> str:
        while True:
            _, seq, tid = heapq.heappop(heap)
            meta = self._meta.get(tid)
            if meta is not None and meta.seq == seq:
                return tid

    def _peek_valid(self, heap: list[tuple[float, int, str]]) -> float | None:
        while heap:
            key, seq, tid = heap[0]
            meta = self._meta.get(tid)
            if meta is not None and meta.seq == seq:
                return key
            heapq.heappop(heap)
        return None

    def _compact_heaps(self) -> None:
        if len(self._by_time) > 2 * len(self._meta) + 1024:
            self._by_time = [(m.last_ts, m.seq, t) for t, m in self._meta.items()]
            heapq.heapify(self._by_time)
        if len(self._by_wall_exp) > 2 * len(self._meta) + 1024:
            self._by_wall_exp = [(m.wall_exp, m.seq, t) for t, m in self._meta.items()] if self._wall else []
            heapq.heapify(self._by_wall_exp)

    def _forget(self, tids: Iterable[str]) -> int:
        gone = [t for t in dict.fromkeys(tids) if t in self._meta]
        for tid in gone:
            self._per_camera[self._meta.pop(tid).camera_id] -= 1
        self._index.remove(gone)
        return len(gone)

    def _apply(self, messages: list[tuple[bytes, dict[bytes, bytes]]]) -> int:
        """Apply stream messages from other daemons; returns entries added/updated."""
        adds: dict[str, None] = {}
        gids: list[tuple[str, int]] = []
        for msg_id, fields in messages:
            self._last_id = _text(msg_id)
            if _text(fields.get(b"dmn")) == self.daemon_id:
                continue
            op, tid = _text(fields.get(b"op")), _text(fields.get(b"tid"))
            if op == "add" and tid:
                adds[tid] = None
            elif op == "gid" and tid:
                try:
                    gids.append((tid, int(fields[b"gid"])))
                except (KeyError, ValueError):
                    self.stats["skipped"] += 1
        fetched: list[tuple[str, _Meta, np.ndarray]] = []
        if adds:
            pipe = self.r.pipeline(transaction=False)
            for tid in adds:
                pipe.hgetall(self.entry_prefix + tid)
            for tid, raw in zip(adds, pipe.execute()):
                parsed = self._parse(tid, raw)
                if parsed is not None:
                    fetched.append(parsed)
        changed = 0
        with self._lock:
            for tid, meta, emb in fetched:
                if self._put(tid, meta, emb):
                    self.stats["synced"] += 1
                    changed += 1
            for tid, gid in gids:
                meta = self._meta.get(tid)
                self.high_water = max(self.high_water, gid)
                if meta is not None and meta.global_id != gid:
                    meta.global_id = gid
                    changed += 1
        return changed

    def _expire(self) -> int:
        """Drop entries past their lifetime (clock), and with the wall clock those gone from Redis."""
        dropped = 0
        with self._lock:
            limit = self._clock() - self.cfg.ttl_s
            stale: list[str] = []
            while (ts := self._peek_valid(self._by_time)) is not None and ts < limit:
                stale.append(self._pop_valid(self._by_time))
            if self._wall:
                wall_now = time.time()
                while (exp := self._peek_valid(self._by_wall_exp)) is not None and exp <= wall_now:
                    stale.append(self._pop_valid(self._by_wall_exp))
            n = self._forget(stale)
            self.stats["expired"] += n
            dropped += n
            if not self._wall:
                return dropped
            if not self._audit:
                self._audit = list(self._meta)
            probe = self._audit[-_AUDIT_BATCH:]
            del self._audit[-_AUDIT_BATCH:]
        if probe:
            pipe = self.r.pipeline(transaction=False)
            for tid in probe:
                pipe.exists(self.entry_prefix + tid)
            missing = [tid for tid, there in zip(probe, pipe.execute()) if not there]
            if missing:
                with self._lock:
                    n = self._forget(missing)
                self.stats["missing"] += n
                dropped += n
        return dropped


def _glob_escape(text: str) -> str:
    """Escape Redis MATCH glob characters in a literal prefix."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
