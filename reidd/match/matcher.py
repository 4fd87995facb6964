"""Cross-camera association against the gallery: the orchestration around :mod:`reidd.match.policy`.

The policy decides (camera-bias removal, calibrated scores, colour and class evidence, joint one-to-one
assignment, ambiguity margin); this class does everything with state and I/O around it:

1. ``submit``: a closed tracklet first tries to continue a recent tracklet of its own camera (a broken
   track: it started at most ``fragment_gap_s`` after the other ended, near where that one was heading,
   and looks alike); fragments form one *group* that is decided as one vehicle. Later ``periodic``
   segments of a long track join their track's group (or take its id) the same way.
2. ``decide(now, progress)``: a group is ready ``wait_s`` after its last tracklet closed (by then every rival
   query for its candidates has been seen: the topology's widest transit window), or earlier
   (``matching.early``) once nothing still to come can change its decision: every tracklet that could be
   one of its candidates is in the gallery (the cameras linked into its camera have processed past its
   window, per their :class:`~reidd.types.CameraProgress`), and either it links to nothing (a rival can
   only take candidates away), or every query that could rival it for the entry it links to has been
   seen (its camera has processed past that entry's window and has no open tracklet that started in it),
   or its link scores at least ``matching.early_score``. Candidates are the gallery's ``top_k`` nearest
   entries of other cameras (plus entries Redis has not taken yet); all pending groups are assigned
   jointly, and only the ready ones are decided.
3. A matched group takes the entry's global id (so ids chain c1 -> c2 -> c3); an unmatched one gets a
   new id from Redis (atomic). Every member becomes a gallery entry with that id.

Decisions are logged (and carried by match events) with the candidates, their scores and the reason.

Restarts: a tracklet that is already in the gallery (decided before the daemon was killed and started
again on the same input and Redis) keeps the decision it got then: its global id and, when it matched,
the same entry. Its events are then the same events (same ids: the sinks drop them as duplicates), so no
event ever contradicts an earlier one. The entry records what it matched (``attributes["matched"]``), and
repeating a match claims that entry again.

Redis outages: a failed gallery sync is skipped; when global ids cannot be allocated the groups stay
pending and are decided once Redis answers again (nothing is lost, only delayed); gallery writes that
fail are kept in a small local overlay, still searched, and written when Redis is back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np
import redis

from reidd.config import MatchingConfig
from reidd.gallery.store import Gallery, GalleryEntry
from reidd.match.policy import AssociationPolicy, Candidate, PolicyDecision, Query, Scored
from reidd.types import Match, Progress, TrackletEmbedding

log = logging.getLogger("reidd.match")


@dataclass
class Decision:
    """The outcome for one query tracklet."""

    query: TrackletEmbedding
    global_id: int
    match: Match | None  # None: a new vehicle, a continued segment or a fragment of a decided group
    best_similarity: float | None  # best candidate's cosine, accepted or not
    explanation: dict | None = None  # reason and scored candidates (the policy's decision)
    score: float | None = None  # the accepted candidate's calibrated score
    new_vehicle: bool = False  # a new global id was allocated for it
    prior: bool = False  # decided before a restart: repeated, not decided again
    decided_ts: float | None = None  # when it was decided, on the clock of last_ts (the ``now_ts`` of decide)


_UNCHECKED = object()
#: matching.early: a query whose best candidate scores below this (calibrated units: below the typical stranger)
#: is decided as unlinked at once; one with a closer candidate waits for that candidate's rivals, as a link does
EARLY_NO_LINK = 0.0
#: the progress at the end of input: every camera's tracklets have all reached the matcher
_ENDED: Progress = {}


@dataclass
class _Group:
    """One vehicle in one camera: a tracklet and the fragments that continue it."""

    members: list[TrackletEmbedding]
    camera_id: str
    gid: int | None = None
    emb_sum: np.ndarray = field(default=None)  # type: ignore[assignment]
    prior: object = None  # the entry it got before a restart (GalleryEntry), None, or _UNCHECKED

    def __post_init__(self) -> None:
        self.prior = _UNCHECKED

    @property
    def first(self) -> TrackletEmbedding:
        return self.members[0]

    @property
    def last_ts(self) -> float:
        return max(m.tracklet.last_ts for m in self.members)

    @property
    def first_ts(self) -> float:
        return min(m.tracklet.first_ts for m in self.members)

    def embedding(self) -> np.ndarray:
        v = self.emb_sum
        return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)

    def add(self, e: TrackletEmbedding) -> None:
        w = float(max(e.crop_count, 1))
        self.emb_sum = w * e.embedding.astype(np.float64) if self.emb_sum is None else self.emb_sum + w * e.embedding
        self.members.append(e)


def _class_vote(members: list[TrackletEmbedding]) -> tuple[int | None, float]:
    votes = Counter(b.cls for m in members for b in m.tracklet.boxes)
    if not votes:
        return None, 0.0
    cls, n = votes.most_common(1)[0]
    return cls, n / sum(votes.values())


class Matcher:
    """Holds pending groups until they are ready, then lets the policy assign them jointly."""

    def __init__(self, cfg: MatchingConfig, gallery: Gallery, *, max_track_memory: int = 100_000,
                 use_class: bool = True):
        self.cfg = cfg
        self.gallery = gallery
        self.policy = AssociationPolicy(cfg)
        self.use_class = use_class  # False when the detector cannot tell classes apart (motion)
        self.pending: list[_Group] = []
        self._followers: list[tuple[TrackletEmbedding, int, str]] = []  # fragments of decided groups
        self._recent: dict[str, deque[_Group]] = {}  # per camera, groups whose last tracklet ended lately
        self._claimed: OrderedDict[tuple[str, str], None] = OrderedDict()  # (entry id, query camera)
        self._track_gid: OrderedDict[tuple[str, int], int] = OrderedDict()  # (camera, local id) -> global id
        self._max = max_track_memory
        self._unsaved: deque[GalleryEntry] = deque(maxlen=max_track_memory)  # written to Redis when it is back
        self.redis_ok = True
        self.unsaved_dropped = 0
        self.fragments_joined = 0
        self._last_warn = 0.0
        self._last_sync = 0.0
        self._now: float | None = None  # the latest ``now_ts`` decided at
        self.decided_early = 0  # groups decided before their full wait (matching.early)
        self._version = 0  # counts the changes a trial decision depends on (submits, decisions)
        self._trial_cache: tuple[tuple, dict[int, PolicyDecision | None]] | None = None

    @property
    def pending_count(self) -> int:
        return sum(len(g.members) for g in self.pending) + len(self._followers)

    # ------------------------------------------------------------------ fragments
    def _continues(self, g: _Group, e: TrackletEmbedding) -> float | None:
        last = max(g.members, key=lambda m: m.tracklet.last_ts).tracklet
        return self.policy.continues(last, g.embedding(), e.tracklet, e.embedding)

    def _recent_groups(self, cam: str, before_ts: float) -> deque[_Group]:
        d = self._recent.setdefault(cam, deque())
        horizon = before_ts - self.cfg.fragment_gap_s - 1.0
        while d and d[0].last_ts < horizon:
            d.popleft()
        while len(d) > 1000:
            d.popleft()
        return d

    # ------------------------------------------------------------------ flow
    def submit(self, q: TrackletEmbedding) -> None:
        self._version += 1
        t = q.tracklet
        self.policy.observe(t.camera_id, q.embedding)
        key = (t.camera_id, t.local_id)
        if t.segment > 0:  # a periodic piece of a long track: same vehicle, by construction
            for g in self.pending:
                if g.camera_id == t.camera_id and any(m.tracklet.local_id == t.local_id for m in g.members):
                    g.add(q)
                    return
            if key in self._track_gid:
                self._followers.append((q, self._track_gid[key], f"segment {t.segment} of track {t.local_id}"))
                return
        recent = self._recent_groups(t.camera_id, t.first_ts)
        best, best_sim = None, -np.inf
        for g in recent:
            sim = self._continues(g, q)
            if sim is not None and sim > best_sim:
                best, best_sim = g, sim
        if best is not None:
            self.fragments_joined += 1
            log.debug("fragment %s continues %s (similarity %.3f)", t.tracklet_id, best.first.tracklet.tracklet_id,
                      best_sim)
            if best.gid is not None:
                self._followers.append(
                    (q, best.gid, f"fragment of {best.first.tracklet.tracklet_id} (similarity {best_sim:.3f})"))
            best.add(q)
            recent.remove(best)
            recent.append(best)
            return
        g = _Group([], t.camera_id)
        g.add(q)
        self.pending.append(g)
        recent.append(g)

    def _query(self, g: _Group) -> Query:
        cls, share = _class_vote(g.members) if self.use_class else (None, 0.0)
        colours = [m.colour for m in g.members if m.colour is not None]
        colour = None if not colours else np.mean(colours, axis=0)
        return Query(g.first.tracklet.tracklet_id, g.camera_id, g.first_ts, g.last_ts, g.embedding(), cls, share, colour)

    def _to_candidate(self, e: GalleryEntry) -> Candidate:
        a = e.attributes
        colour = a.get("colour")
        return Candidate(e.tracklet_id, e.camera_id, e.global_id, e.first_ts, e.last_ts, e.embedding,
                         a.get("cls") if self.use_class and a.get("cls_share") is not None else None,
                         float(a.get("cls_share") or 0.0), None if colour is None else np.asarray(colour, np.float32))

    def decide(self, now_ts: float | None = None, progress: Progress | None = None) -> list[Decision]:
        """Decide every pending group that is ready at ``now_ts``. Returns decisions in a deterministic
        order; returns none (and keeps the groups pending) while Redis cannot allocate global ids.
        ``progress``: how far each camera's tracklets have reached the matcher (early decisions).

        ``now_ts`` None (end of input, shutdown: nothing more comes): with ``matching.early``, everything it
        can decide at the latest time seen, in rounds (a c3 query after the c2 entries it may match); the rest
        in the order time would have decided it (each group when it would have become ready), so that a c3
        query still sees the c2 entries decided just before it."""
        if now_ts is not None:
            self._now = now_ts if self._now is None else max(self._now, now_ts)
            return self._decide_at(now_ts, progress)
        out: list[Decision] = []
        if self.cfg.early and self._now is not None:
            while self.pending:
                before = len(self.pending)
                out += self._decide_at(self._now, _ENDED)
                if len(self.pending) == before:
                    break
        wait = self.policy.wait_s()
        while self.pending or self._followers:
            before = (len(self.pending), len(self._followers))
            t = min(g.last_ts for g in self.pending) + wait if self.pending else -np.inf
            out += self._decide_at(t)
            if (len(self.pending), len(self._followers)) == before:  # Redis is down: try again later
                break
        return out

    def _idle_sync(self) -> None:
        """While nothing is due: pull other daemons' changes about once a second, which also notices a
        Redis outage (and its end) when no decision touches Redis."""
        if time.monotonic() - self._last_sync < 1.0:
            return
        self._last_sync = time.monotonic()
        try:
            self.gallery.sync()
        except redis.RedisError as exc:
            self._redis_failed("gallery sync", exc)
            return
        if not self._unsaved:
            self.redis_ok = True

    # ------------------------------------------------------------------ early decisions
    def _complete(self, g: _Group, progress: Progress) -> bool:
        """Is every tracklet that could be a candidate of ``g`` in the gallery already? (Each camera linked
        into g's has processed past the window and holds no open tracklet, and this matcher no pending one,
        that ended inside it.)"""
        if not self.cfg.topology:
            return False  # no topology: any camera, any time within window_s; wait as configured
        links = self.policy.links_into(g.camera_id)  # none: no camera feeds this one, nothing to wait for
        t0 = g.first_ts
        for src, lo, hi in links:
            if progress is not _ENDED:
                p = progress.get(src)
                if p is None or p.ts <= t0 - lo or any(t0 - hi <= last <= t0 - lo for _, last in p.open):
                    return False
            if any(o.camera_id == src and t0 - hi <= o.last_ts <= t0 - lo for o in self.pending):
                return False
        return True

    def _rivals_seen(self, g: _Group, chosen: Scored, progress: Progress) -> bool:
        """Has every query of g's camera that could claim ``chosen`` (started within its transit window) been
        seen? (The camera has processed past the window and holds no open tracklet that started in it.)"""
        if progress is _ENDED:
            return True
        win = self.policy.window(chosen.camera_id, g.camera_id)
        p = progress.get(g.camera_id)
        if win is None or p is None:
            return False
        lo, hi = chosen.last_ts + win[0], chosen.last_ts + win[1]
        return p.ts > hi and not any(lo <= first <= hi for first, _ in p.open)

    def _trial(self) -> dict[int, PolicyDecision | None]:
        """What each pending group would get if it were decided now (None: it repeats a decision from before a
        restart): a trial assignment of everything pending that keeps nothing. A decision does not depend on
        which groups are ready, only on the groups, the gallery, the claims and the statistics, so the trial is
        done again only when one of those changed (a submit, a decision, the gallery), not at every tick."""
        key = (self._version, len(self.gallery), sum(self.gallery.stats.values()))
        if self._trial_cache is not None and self._trial_cache[0] == key:
            return self._trial_cache[1]
        prior = {id(g) for g in self.pending if self._prior(g) is not None}
        fresh = [g for g in self.pending if id(g) not in prior]
        queries = [self._query(g) for g in fresh]
        scored = [self.policy.score(q, self._candidates(q)) for q in queries]
        by_id = {d.query_id: d for d in self.policy.assign(queries, scored, [True] * len(fresh), set(self._claimed),
                                                            learn=False)}
        trial: dict[int, PolicyDecision | None] = {id(g): None for g in self.pending if id(g) in prior}
        trial.update({id(g): by_id[g.first.tracklet.tracklet_id] for g in fresh})
        self._trial_cache = (key, trial)
        return trial

    def _early(self, progress: Progress, waiting: list[bool]) -> list[bool]:
        """Which of the pending groups (``waiting``: not ready by their full wait) can be decided now."""
        complete = [w and self._complete(g, progress) for g, w in zip(self.pending, waiting)]
        if not any(complete):
            return complete
        try:
            trial = self._trial()
        except redis.RedisError:
            return [False] * len(self.pending)  # the real round says what Redis does
        out = []
        for g, c in zip(self.pending, complete):
            pd = trial[id(g)] if c else None
            if pd is None:  # not complete, or decided before a restart (repeated as it was)
                out.append(c)
            elif pd.chosen is not None:
                out.append((self.cfg.early_score is not None and pd.chosen.score >= self.cfg.early_score)
                           or self._rivals_seen(g, pd.chosen, progress))
            else:  # no link now; it may still get one while the statistics learn, unless no candidate is close
                best = pd.candidates[0] if pd.candidates else None
                out.append(best is None or best.score < EARLY_NO_LINK or self._rivals_seen(g, best, progress))
        return out

    def _decide_at(self, now_ts: float, progress: Progress | None = None) -> list[Decision]:
        self._flush_unsaved()
        if not self.pending and not self._followers:
            self._idle_sync()
            return []
        wait = self.policy.wait_s()
        ready = [g.last_ts + wait <= now_ts for g in self.pending]
        if self.cfg.early and progress is not None and not all(ready):
            early = self._early(progress, [not r for r in ready])
            ready = [r or e for r, e in zip(ready, early)]
        else:
            early = [False] * len(ready)
        out: list[Decision] = [Decision(q, gid, None, None, {"reason": reason}) for q, gid, reason in self._followers]
        if not any(ready):
            self._followers = []
            self._commit(out)
            self._idle_sync()
            return self._stamped(out, now_ts)
        try:
            self.gallery.sync()
        except redis.RedisError as exc:
            self._redis_failed("gallery sync", exc)
        try:
            prior = {id(g): e for g in self.pending if (e := self._prior(g)) is not None}
        except redis.RedisError as exc:
            self._redis_failed("gallery lookup (decisions deferred)", exc)
            return []
        fresh = [(g, r) for g, r in zip(self.pending, ready) if id(g) not in prior]
        queries = [self._query(g) for g, _ in fresh]
        scored = [self.policy.score(q, self._candidates(q), record=r) for q, (_, r) in zip(queries, fresh)]
        self._version += 1  # the calibration took these scores in
        decided = self.policy.assign(queries, scored, [r for _, r in fresh], set(self._claimed))
        by_id = {d.query_id: d for d in decided}
        groups = [g for g, r in zip(self.pending, ready) if r]
        try:
            new_ids = {id(g): self.gallery.allocate_global_id() for g in groups
                       if id(g) not in prior and by_id[g.first.tracklet.tracklet_id].chosen is None}
        except redis.RedisError as exc:
            self._redis_failed("global id allocation (decisions deferred)", exc)
            return []
        self._followers = []
        for g in sorted(groups, key=lambda g: (g.first.tracklet.last_ts, g.camera_id, g.first.tracklet.local_id,
                                               g.first.tracklet.segment)):
            if id(g) in prior:
                out += self._prior_decisions(g, prior[id(g)])
                continue
            pd = by_id[g.first.tracklet.tracklet_id]
            out += self._group_decisions(g, pd, new_ids.get(id(g)))
        self.pending = [g for g, r in zip(self.pending, ready) if not r]
        self.decided_early += sum(early)
        self.redis_ok = True
        self._commit(out)
        return self._stamped(out, now_ts)

    @staticmethod
    def _stamped(decisions: list[Decision], now_ts: float) -> list[Decision]:
        """Record when each decision was taken (fragments of decided groups at the end of input: their own end)."""
        for d in decisions:
            d.decided_ts = float(now_ts) if np.isfinite(now_ts) else d.query.tracklet.last_ts
        return decisions

    def _group_decisions(self, g: _Group, pd: PolicyDecision, new_id: int | None) -> list[Decision]:
        q = g.first
        t = q.tracklet
        explanation = {"reason": pd.reason, "candidates": [s.explain() for s in pd.candidates[:5]]}
        best_cos = max((s.cosine for s in pd.candidates), default=None)
        if pd.chosen is not None:
            c = pd.chosen
            gid = c.global_id
            self._claim((c.entry_id, t.camera_id))
            m = Match(t.tracklet_id, t.camera_id, c.entry_id, c.camera_id, c.cosine, c.transit_s, gid,
                      c.first_ts, c.last_ts)
            first = Decision(q, gid, m, best_cos, explanation, c.score)
            log.info("match %s -> %s score=%.2f cos=%.3f transit=%.1fs gid=%d (%s)", t.tracklet_id, c.entry_id,
                     c.score, c.cosine, c.transit_s, gid, pd.reason)
        else:
            gid = int(new_id)  # type: ignore[arg-type]
            first = Decision(q, gid, None, best_cos, explanation, new_vehicle=True)
            log.debug("new %s gid=%d: %s", t.tracklet_id, gid, pd.reason)
        g.gid = gid
        rest = {"reason": f"fragment of {t.tracklet_id}"}
        return [first] + [Decision(m, gid, None, None, rest) for m in g.members[1:]]

    def _prior(self, g: _Group) -> GalleryEntry | None:
        """The gallery entry of the group's first tracklet when it was decided before (a restart), else None.
        Looked up once per group (a Redis round trip when the entry is not in memory), not at every round."""
        if g.prior is _UNCHECKED:
            e = self.gallery.get(g.first.tracklet.tracklet_id)
            g.prior = e if e is not None and e.camera_id == g.camera_id else None
        return g.prior  # type: ignore[return-value]

    def _prior_decisions(self, g: _Group, prior: GalleryEntry) -> list[Decision]:
        """Repeat the decision the group's first tracklet got before a restart: same id, same match."""
        q = g.first
        t = q.tracklet
        gid = int(prior.global_id)
        explanation = {"reason": "decided before a restart: the earlier decision stands"}
        matched = prior.attributes.get("matched")
        m = None
        other = self.entry(matched) if isinstance(matched, str) else None
        if other is not None:
            self._claim((other.tracklet_id, t.camera_id))
            cos = float(np.dot(q.embedding, other.embedding))
            transit = t.first_ts - other.last_ts if t.first_ts >= other.last_ts else other.first_ts - t.last_ts
            m = Match(t.tracklet_id, t.camera_id, other.tracklet_id, other.camera_id, cos, transit, gid,
                      other.first_ts, other.last_ts)
        g.gid = gid
        log.info("restart: %s keeps gid=%d%s", t.tracklet_id, gid, f" (match {matched})" if m else "")
        first = Decision(q, gid, m, None, explanation, None, prior=True)
        rest = {"reason": f"fragment of {t.tracklet_id}"}
        return [first] + [Decision(mm, gid, None, None, rest, prior=self.gallery.get(mm.tracklet.tracklet_id) is not None)
                          for mm in g.members[1:]]

    def _commit(self, decisions: list[Decision]) -> None:
        self._version += 1
        for d in decisions:
            t = d.query.tracklet
            self._remember_track((t.camera_id, t.local_id), d.global_id)
            if d.prior:
                continue  # its entry is in the gallery already
            cls_share = sum(b.cls == t.cls for b in t.boxes) / len(t.boxes)
            entry = GalleryEntry(
                tracklet_id=t.tracklet_id, camera_id=t.camera_id, first_ts=t.first_ts, last_ts=t.last_ts,
                embedding=d.query.embedding, global_id=d.global_id,
                attributes={"cls": t.cls, "cls_share": round(cls_share, 3), "num_boxes": len(t.boxes),
                            "local_id": t.local_id,
                            "matched": None if d.match is None else d.match.gallery_id,
                            "colour": None if d.query.colour is None else [round(float(v), 5) for v in d.query.colour]},
            )
            if self._unsaved:
                self._keep_unsaved(entry)  # keep the order of writes
            else:
                try:
                    self.gallery.add(entry)
                except redis.RedisError as exc:
                    self._redis_failed("gallery write (kept locally)", exc)
                    self._keep_unsaved(entry)
    @property
    def unsaved_count(self) -> int:
        """Gallery entries waiting for Redis to take them."""
        return len(self._unsaved)

    def allocate_global_id(self) -> int:
        """A new global id from Redis (raises redis.RedisError while it is down)."""
        return self.gallery.allocate_global_id()

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

    def _candidates(self, q: Query) -> list[Candidate]:
        found = self.gallery.search(q.embedding, self.cfg.top_k, exclude_camera=q.camera_id)
        if self._unsaved:  # entries Redis has not taken yet are still candidates
            local = [u for u in self._unsaved if u.camera_id != q.camera_id]
            if local:
                sims = np.stack([u.embedding for u in local]) @ q.embedding
                found = sorted([*found, *zip(local, sims.tolist())], key=lambda es: -es[1])[: self.cfg.top_k]
        return [self._to_candidate(e) for e, _ in found]

    def _claim(self, key: tuple[str, str]) -> None:
        self._claimed[key] = None
        while len(self._claimed) > self._max:
            self._claimed.popitem(last=False)

    def _remember_track(self, key: tuple[str, int], gid: int) -> None:
        self._track_gid[key] = gid
        self._track_gid.move_to_end(key)
        while len(self._track_gid) > self._max:
            self._track_gid.popitem(last=False)
