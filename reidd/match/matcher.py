"""Cross-camera association of closed tracklets against the gallery.

For each new tracklet (the *query*):

1. candidates = the gallery's ``top_k`` nearest entries from *other* cameras;
2. kept when the camera topology allows the pair and the transit time fits: with links,
   ``gallery camera -> query camera`` with ``min_s <= query.first_ts - entry.last_ts <= max_s``;
   without links, any pair with ``|transit| <= window_s``; and similarity ``>= threshold``;
3. queries closing within ``decision_window_s`` of each other are assigned jointly and one-to-one
   (Hungarian on similarity, or mutual best): two queries never both claim one gallery entry,
   and an entry already claimed by a tracklet of the query's camera is not claimed again;
4. a matched query takes the entry's global id (so ids chain c1 -> c2 -> c3); an unmatched one gets
   a new id from Redis (atomic). Later segments of a long track keep their first segment's id.

Decisions are logged with similarity and transit time.

Redis outages: a failed gallery sync is skipped; when global ids cannot be allocated the queries stay
pending and are decided once Redis answers again (nothing is lost, only delayed); gallery writes that
fail are kept in a small local overlay, still searched, and written when Redis is back.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np
import redis
from scipy.optimize import linear_sum_assignment

from reidd.config import MatchingConfig
from reidd.gallery.store import Gallery, GalleryEntry
from reidd.types import Match, TrackletEmbedding

log = logging.getLogger("reidd.match")


@dataclass
class Decision:
    """The outcome for one query tracklet."""

    query: TrackletEmbedding
    global_id: int
    match: Match | None  # None: a new vehicle (or a continued segment)
    best_similarity: float | None  # best candidate's similarity, accepted or not


class Matcher:
    """Buffers queries for the decision window, then assigns them jointly."""

    def __init__(self, cfg: MatchingConfig, gallery: Gallery, *, max_track_memory: int = 100_000):
        self.cfg = cfg
        self.gallery = gallery
        self.pending: list[TrackletEmbedding] = []
        self._claimed: OrderedDict[tuple[str, str], None] = OrderedDict()  # (entry id, query camera)
        self._track_gid: OrderedDict[tuple[str, int], int] = OrderedDict()  # (camera, local id) -> global id
        self._max = max_track_memory
        self._unsaved: deque[GalleryEntry] = deque(maxlen=max_track_memory)  # written to Redis when it is back
        self.redis_ok = True
        self.unsaved_dropped = 0
        self._last_warn = 0.0
        self._links: dict[tuple[str, str], tuple[float, float]] = {}
        for link in cfg.topology:
            self._links[(link.src, link.dst)] = (link.min_s, link.max_s)
            if link.bidirectional:
                self._links.setdefault((link.dst, link.src), (link.min_s, link.max_s))

    # ------------------------------------------------------------------ policy
    def transit_ok(self, src_cam: str, dst_cam: str, transit_s: float) -> bool:
        """Is a vehicle seen last in ``src_cam`` allowed to appear in ``dst_cam`` ``transit_s`` later?"""
        if src_cam == dst_cam:
            return False
        if not self._links:
            return abs(transit_s) <= self.cfg.window_s
        rng = self._links.get((src_cam, dst_cam))
        return rng is not None and rng[0] <= transit_s <= rng[1]

    # ------------------------------------------------------------------ flow
    def submit(self, q: TrackletEmbedding) -> None:
        self.pending.append(q)

    def decide(self, now_ts: float | None = None) -> list[Decision]:
        """Decide every pending query whose tracklet ended at least ``decision_window_s`` before ``now_ts``
        (all of them when ``now_ts`` is None). Returns decisions in a deterministic order; returns none
        (and keeps the queries pending) while Redis cannot allocate global ids."""
        self._flush_unsaved()
        if not self.pending:
            return []
        if now_ts is None:
            ready, rest = self.pending, []
        else:
            cut = now_ts - self.cfg.decision_window_s
            ready = [q for q in self.pending if q.tracklet.last_ts <= cut]
            if not ready:
                return []
            rest = [q for q in self.pending if q.tracklet.last_ts > cut]
        ready.sort(key=lambda q: (q.tracklet.last_ts, q.tracklet.camera_id, q.tracklet.local_id,
                                  q.tracklet.segment))
        try:
            self.gallery.sync()
        except redis.RedisError as exc:
            self._redis_failed("gallery sync", exc)
        decisions: dict[int, Decision] = {}
        fresh: list[int] = []
        for i, q in enumerate(ready):
            key = (q.tracklet.camera_id, q.tracklet.local_id)
            if q.tracklet.segment > 0 and key in self._track_gid:
                decisions[i] = Decision(q, self._track_gid[key], None, None)
            else:
                fresh.append(i)
        try:
            self._assign([ready[i] for i in fresh], fresh, decisions)
        except redis.RedisError as exc:
            self._redis_failed("global id allocation (decisions deferred)", exc)
            return []
        self.pending = rest
        self.redis_ok = True
        out = [decisions[i] for i in range(len(ready))]
        for d in out:
            t = d.query.tracklet
            self._remember_track((t.camera_id, t.local_id), d.global_id)
            entry = GalleryEntry(
                tracklet_id=t.tracklet_id, camera_id=t.camera_id, first_ts=t.first_ts, last_ts=t.last_ts,
                embedding=d.query.embedding, global_id=d.global_id,
                attributes={"cls": t.cls, "num_boxes": len(t.boxes), "local_id": t.local_id},
            )
            if self._unsaved:
                self._keep_unsaved(entry)  # keep the order of writes
            else:
                try:
                    self.gallery.add(entry)
                except redis.RedisError as exc:
                    self._redis_failed("gallery write (kept locally)", exc)
                    self._keep_unsaved(entry)
            if d.match is not None:
                log.info("match %s -> %s sim=%.3f transit=%.1fs gid=%d", d.match.query_id, d.match.gallery_id,
                         d.match.similarity, d.match.transit_s, d.global_id)
            else:
                log.debug("new %s gid=%d best=%s", t.tracklet_id, d.global_id,
                          "none" if d.best_similarity is None else f"{d.best_similarity:.3f}")
        return out

    def _redis_failed(self, what: str, exc: Exception) -> None:
        self.redis_ok = False
        if time.monotonic() - self._last_warn > 5:
            log.warning("Redis unavailable during %s: %s", what, exc)
            self._last_warn = time.monotonic()

    def _keep_unsaved(self, entry: GalleryEntry) -> None:
        """Hold a gallery entry until Redis takes it; the backlog is bounded, and overflow is counted."""
        if len(self._unsaved) == self._unsaved.maxlen:
            self.unsaved_dropped += 1
            log.error("Redis down too long: %d gallery entries waiting; the oldest (%s) is dropped from the backlog "
                      "(its events were published; it just cannot be matched against)", len(self._unsaved),
                      self._unsaved[0].tracklet_id)
        self._unsaved.append(entry)

    def _flush_unsaved(self) -> None:
        while self._unsaved:
            try:
                self.gallery.add(self._unsaved[0])
            except redis.RedisError as exc:
                self._redis_failed("gallery write retry", exc)
                return
            self._unsaved.popleft()

    def entry(self, tracklet_id: str) -> GalleryEntry | None:
        """A gallery entry by id, including ones not yet written to Redis."""
        e = next((u for u in self._unsaved if u.tracklet_id == tracklet_id), None)
        if e is None:
            try:
                e = self.gallery.get(tracklet_id)
            except redis.RedisError:
                e = None
        return e

    def _candidates(self, q: TrackletEmbedding) -> list[tuple[GalleryEntry, float, float]]:
        t = q.tracklet
        found = self.gallery.search(q.embedding, self.cfg.top_k, exclude_camera=t.camera_id)
        if self._unsaved:  # entries Redis has not taken yet are still candidates
            local = [u for u in self._unsaved if u.camera_id != t.camera_id]
            if local:
                sims = np.stack([u.embedding for u in local]) @ q.embedding
                found = sorted([*found, *zip(local, sims.tolist())], key=lambda es: -es[1])[: self.cfg.top_k]
        out = []
        for entry, sim in found:
            transit = t.first_ts - entry.last_ts
            if self.transit_ok(entry.camera_id, t.camera_id, transit):
                out.append((entry, float(sim), float(transit)))
        return out

    def _assign(self, queries: list[TrackletEmbedding], idx: list[int], decisions: dict[int, Decision]) -> None:
        if not queries:
            return
        cands = [self._candidates(q) for q in queries]
        best = [max((s for _, s, _ in c), default=None) for c in cands]
        entries: dict[str, int] = {}
        for c in cands:
            for e, _, _ in c:
                entries.setdefault(e.tracklet_id, len(entries))
        sim = np.full((len(queries), max(len(entries), 1)), -np.inf, np.float64)
        info: dict[tuple[int, int], tuple[GalleryEntry, float]] = {}
        for qi, (q, c) in enumerate(zip(queries, cands)):
            for e, s, transit in c:
                if s < self.cfg.threshold or (e.tracklet_id, q.tracklet.camera_id) in self._claimed:
                    continue
                ej = entries[e.tracklet_id]
                sim[qi, ej] = s
                info[(qi, ej)] = (e, transit)
        pairs = self._solve(sim)
        matched = {qi: ej for qi, ej in pairs}
        new_ids = {qi: self.gallery.allocate_global_id() for qi in range(len(queries)) if qi not in matched}
        for qi, q in enumerate(queries):
            t = q.tracklet
            if qi in matched:
                ej = matched[qi]
                e, transit = info[(qi, ej)]
                gid = e.global_id
                self._claim((e.tracklet_id, t.camera_id))
                m = Match(t.tracklet_id, t.camera_id, e.tracklet_id, e.camera_id, float(sim[qi, ej]), transit, gid)
                decisions[idx[qi]] = Decision(q, gid, m, best[qi])
            else:
                decisions[idx[qi]] = Decision(q, new_ids[qi], None, best[qi])

    def _solve(self, sim: np.ndarray) -> list[tuple[int, int]]:
        valid = np.isfinite(sim)
        if not valid.any():
            return []
        if self.cfg.assignment == "mutual_best":
            pairs = []
            for qi in range(sim.shape[0]):
                if not valid[qi].any():
                    continue
                ej = int(np.argmax(sim[qi]))
                if int(np.argmax(sim[:, ej])) == qi:
                    pairs.append((qi, ej))
            return pairs
        cost = np.where(valid, -sim, 1e6)
        rows, cols = linear_sum_assignment(cost)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if valid[r, c]]

    def _claim(self, key: tuple[str, str]) -> None:
        self._claimed[key] = None
        while len(self._claimed) > self._max:
            self._claimed.popitem(last=False)

    def _remember_track(self, key: tuple[str, int], gid: int) -> None:
        self._track_gid[key] = gid
        self._track_gid.move_to_end(key)
        while len(self._track_gid) > self._max:
            self._track_gid.popitem(last=False)
