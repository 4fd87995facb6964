"""Cross-camera association as a pure policy: queries and candidates in, explained decisions out.

No Redis, no clocks, no I/O: :class:`~reidd.match.matcher.Matcher` retrieves candidates from the
gallery, allocates global ids and writes entries; this module only decides. Every decision carries
the candidates it considered with their scores and the reason the winner won or nothing was linked.

How a query (a closed tracklet, or a group of fragments of one track) is scored against a candidate
(a gallery entry of another camera that the topology allows):

1. **Camera bias removed.** Each camera's mean embedding (a running mean over its tracklets, shrunk
   towards zero while few are seen) is subtracted from both vectors before the cosine: what every
   vehicle of a camera shares (road, light, viewpoint) stops counting as similarity.
2. **Calibrated.** The cosine becomes a z-score against the deployment's own score distribution for
   that camera pair: almost every (query, candidate) pair in the transit window is two different
   vehicles, so the median and MAD of all scored pairs describe "strangers" for this model and site.
   A threshold in z units means the same for any model; before ``calibration_min`` pairs are seen the
   pooled distribution of all pairs, then a prior (median 0, spread 0.2), stands in.
3. **Soft evidence.** Colour (hue-saturation signatures) adds ``colour_weight * (bc - colour_ref)``;
   vehicle classes that disagree subtract ``class_penalty`` (motorcycle vs four wheels counts twice
   as much as car vs bus/truck, which COCO confuses), only where both tracklets' class votes are clear.

Assignment: all pending queries (ready or still waiting for their competitors) and their candidates
enter one one-to-one assignment (Hungarian on the total score, pairs below ``min_score`` excluded);
only the decisions of ready queries are returned. A ready query's assigned link is kept only when it
beats the query's best alternative (another vehicle) and the entry's best other claimant by
``margin``: when two are close, no link rather than a wrong one.

Fragments: :meth:`AssociationPolicy.continues` says whether a tracklet continues a broken track of its
own camera (short gap, where the other was heading, alike); the matcher then decides the pieces as one.

What the benchmark kept (``scripts/bench_mtmc.py``, seeds 11-13): camera-bias removal (top-1 of the true
match among in-window candidates 0.79 -> 0.89 with the default embedder), the calibrated score with
``min_score`` 2 and ``margin`` 0.3 for both the default and a trained embedder, colour (without it IDF1
0.89 -> 0.70 with the default embedder). Not kept as defaults: a floor on the appearance z alone
(``min_appearance``: fewer false links with a trained model, far fewer links with the default one) and
flip-averaged embeddings (no gain). Transit-time evidence (``transit_weight`` 0.5: how likely a transit is, from the
transits the camera pair's accepted links took) was kept: YOLO11n false-merge rate 0.041 -> 0.034.
Tracklet-level re-ranking was measured and left out (``scripts/bench_rerank.py`` on the recorded embeddings,
191 queries over seeds 11-13): k-reciprocal re-ranking of the bias-removed vectors over every tracklet of
both cameras, although offline and so seeing the future, put the true match first among the in-window
candidates less often (default embedder 0.890 -> 0.81-0.83 for k1 6-20, trained 0.984 -> 0.974-0.979),
alpha query expansion changed nothing (0.890, 0.984) and database augmentation lost (0.874). A vehicle
leaves one or two tracklets per camera, so the reciprocal neighbourhoods these methods rely on hold
other vehicles; the pooled tracklet embedding already averages the vehicle's own crops.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import lap
import numpy as np

from reidd.config import MatchingConfig
from reidd.reid.colour import colour_similarity
from reidd.types import Tracklet

#: Class groups for the class evidence: COCO 3 motorcycle; 2 car; 5 bus and 7 truck.
CLASS_GROUP = {3: "two-wheel", 2: "car", 5: "large", 7: "large"}
PRIOR_SCALE = 0.2  # spread of bias-removed cosines of strangers before any data (unit vectors, wide models)


def max_assignment(score: np.ndarray) -> dict[int, int]:
    """The one-to-one assignment of rows to columns with the highest total score; ``-inf`` (or any non-finite)
    marks a pair that may not be assigned, and rows left without an allowed column stay out.

    Solved with ``lap.lapjv`` (the Jonker-Volgenant solver ultralytics' trackers use; rectangular matrices are
    padded by ``extend_cost``) rather than scipy's, whose ``scipy.optimize`` import alone is 38 MB resident."""
    valid = np.isfinite(score)
    if not valid.any():
        return {}
    cost = -np.where(valid, score, 0.0).astype(np.float64)
    # a forbidden pair costs more than any set of allowed ones can differ by, so (as with scipy and a huge value)
    # the most pairs are assigned first and then the best of them; kept small so no precision is lost
    cost[~valid] = (1.0 + 2.0 * np.abs(cost[valid]).max()) * (min(cost.shape) + 1)
    _, x, _ = lap.lapjv(cost, extend_cost=True)
    return {int(r): int(c) for r, c in enumerate(x) if c >= 0 and valid[r, c]}


def _centre_and_size(xyxy: tuple[float, float, float, float]) -> tuple[float, float, float]:
    x1, y1, x2, y2 = xyxy
    return (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1, 1.0)


@dataclass
class Query:
    """What the policy knows of a query tracklet (or fragment group)."""

    query_id: str
    camera_id: str
    first_ts: float
    last_ts: float
    embedding: np.ndarray  # unit norm, raw (camera bias still in)
    cls: int | None = None  # majority class, None when the detector gives none
    cls_share: float = 0.0  # fraction of boxes voting for ``cls``
    colour: np.ndarray | None = None


@dataclass
class Candidate:
    """A gallery entry of another camera."""

    entry_id: str
    camera_id: str
    global_id: int
    first_ts: float
    last_ts: float
    embedding: np.ndarray
    cls: int | None = None
    cls_share: float = 0.0
    colour: np.ndarray | None = None


@dataclass
class Scored:
    """One candidate's evaluation, as reported in decisions and logs."""

    entry_id: str
    camera_id: str
    global_id: int
    transit_s: float
    cosine: float  # raw cosine
    adjusted: float  # cosine after camera-bias removal
    z: float  # calibrated appearance score
    colour: float | None  # Bhattacharyya coefficient of the colour signatures
    class_term: float
    score: float  # z + colour term + class term + transit term
    transit_term: float = 0.0  # log-likelihood ratio of the transit time (learned) against a uniform window
    first_ts: float = 0.0  # the entry's own times (a match event reports them)
    last_ts: float = 0.0

    def explain(self) -> dict:
        return {"entry": self.entry_id, "camera": self.camera_id, "gid": self.global_id,
                "transit_s": round(self.transit_s, 2), "cosine": round(self.cosine, 4),
                "adjusted": round(self.adjusted, 4), "z": round(self.z, 3),
                "colour": None if self.colour is None else round(self.colour, 3),
                "class": round(self.class_term, 3), "transit": round(self.transit_term, 3),
                "score": round(self.score, 3)}


@dataclass
class PolicyDecision:
    query_id: str
    chosen: Scored | None
    candidates: list[Scored] = field(default_factory=list)  # best first
    reason: str = ""


class AssociationPolicy:
    """Scores, calibrates and assigns. State: per-camera mean embeddings and per-pair score samples."""

    def __init__(self, cfg: MatchingConfig):
        self.cfg = cfg
        self._links: dict[tuple[str, str], tuple[float, float]] = {}
        for link in cfg.topology:
            self._links[(link.src, link.dst)] = (link.min_s, link.max_s)
            if link.bidirectional:
                self._links.setdefault((link.dst, link.src), (link.min_s, link.max_s))
        self._cam_mean: dict[str, np.ndarray] = {}
        self._cam_n: dict[str, int] = {}
        self._samples: dict[tuple[str, str], deque[float]] = {}
        self._pooled: deque[float] = deque(maxlen=cfg.calibration_window)
        self._stats: dict[tuple[str, str] | None, tuple[float, float]] = {}
        self._transits: dict[tuple[str, str], deque[float]] = {}  # accepted links' transit times per pair
        self._transit_arrays: dict[tuple[str, str], np.ndarray] = {}  # the same as arrays, until the next link

    # ------------------------------------------------------------------ topology
    def transit_ok(self, src_cam: str, dst_cam: str, transit_s: float) -> bool:
        """Is a vehicle seen last in ``src_cam`` allowed to appear in ``dst_cam`` ``transit_s`` later?"""
        if src_cam == dst_cam:
            return False
        if not self._links:
            return abs(transit_s) <= self.cfg.window_s
        rng = self._links.get((src_cam, dst_cam))
        return rng is not None and rng[0] <= transit_s <= rng[1]

    def links_into(self, camera_id: str) -> list[tuple[str, float, float]]:
        """``(source camera, min_s, max_s)`` of every topology link into ``camera_id``."""
        return [(src, lo, hi) for (src, dst), (lo, hi) in self._links.items() if dst == camera_id]

    def window(self, src_cam: str, dst_cam: str) -> tuple[float, float] | None:
        """The transit window ``(min_s, max_s)`` of a topology link, None when there is none."""
        return self._links.get((src_cam, dst_cam))

    def wait_s(self) -> float:
        """How long a query waits at most after it closed for its competitors: ``cfg.wait_s``, else the widest
        transit window of the topology (a rival for the same entry appears within it), at most 60 s, halved
        with ``cfg.early`` (which decides sooner wherever nothing still to come can change a decision)."""
        if self.cfg.wait_s is not None:
            return self.cfg.wait_s
        if not self._links:
            return self.cfg.decision_window_s
        widest = min(60.0, max(hi - lo for lo, hi in self._links.values()))
        return widest / 2 if self.cfg.early else widest

    # ------------------------------------------------------------------ appearance
    def observe(self, camera_id: str, embedding: np.ndarray) -> None:
        """Feed every tracklet embedding of a camera (in order): updates that camera's mean."""
        n = self._cam_n.get(camera_id, 0) + 1
        self._cam_n[camera_id] = n
        e = np.asarray(embedding, np.float64)
        mean = self._cam_mean.get(camera_id)
        rate = 1.0 / min(n, self.cfg.bias_window)
        self._cam_mean[camera_id] = e.copy() if mean is None else mean + rate * (e - mean)

    def adjusted(self, camera_id: str, embedding: np.ndarray) -> np.ndarray:
        """The embedding without its camera's mean (shrunk while few are known), unit norm."""
        e = np.asarray(embedding, np.float64)
        if self.cfg.camera_bias and camera_id in self._cam_mean:
            n = self._cam_n[camera_id]
            e = e - self._cam_mean[camera_id] * (n / (n + self.cfg.bias_shrink))
        norm = np.linalg.norm(e)
        return e / norm if norm > 1e-12 else e

    def _calibration(self, pair: tuple[str, str]) -> tuple[float, float]:
        if pair in self._stats:
            return self._stats[pair]
        s = self._samples.get(pair)
        src = s if s is not None and len(s) >= self.cfg.calibration_min else (
            self._pooled if len(self._pooled) >= self.cfg.calibration_min else None)
        if src is None:
            stat = (0.0, PRIOR_SCALE)
        else:
            a = np.fromiter(src, np.float64)
            med = float(np.median(a))
            stat = (med, max(1.4826 * float(np.median(np.abs(a - med))), 0.02))
        self._stats[pair] = stat
        return stat

    def _record(self, pair: tuple[str, str], values: list[float]) -> None:
        d = self._samples.setdefault(pair, deque(maxlen=self.cfg.calibration_window))
        d.extend(values)
        self._pooled.extend(values)
        self._stats.clear()

    # ------------------------------------------------------------------ transit time
    def _transit_term(self, pair: tuple[str, str], transit: float) -> float:
        """``transit_weight`` x log(p(transit) / uniform) for the pair's topology window, where p mixes a kernel
        density of the transits of the links this pair accepted so far with ``transit_prior`` uniform
        pseudo-links: 0 until links are seen, then positive where vehicles usually take that long."""
        w = self.cfg.transit_weight
        window = self._links.get(pair)
        seen = self._transits.get(pair)
        if not w or window is None or not seen:
            return 0.0
        lo, hi = window
        span = max(hi - lo, 1e-3)
        h = max(0.5, 0.08 * span)
        a = self._transit_arrays.get(pair)
        if a is None:
            a = self._transit_arrays[pair] = np.fromiter(seen, np.float64)
        kde = float(np.exp(-0.5 * ((transit - a) / h) ** 2).sum()) / (len(a) * h * np.sqrt(2 * np.pi))
        n0 = float(self.cfg.transit_prior)
        p = (len(a) * kde + n0 / span) / (len(a) + n0)
        return w * float(np.clip(np.log(p * span), -3.0, 1.5))

    def learn_transit(self, src_cam: str, dst_cam: str, transit_s: float) -> None:
        """Record an accepted link's transit time (the density of :meth:`_transit_term`)."""
        self._transits.setdefault((src_cam, dst_cam), deque(maxlen=500)).append(float(transit_s))
        self._transit_arrays.pop((src_cam, dst_cam), None)

    # ------------------------------------------------------------------ scoring
    def _class_term(self, a_cls: int | None, a_share: float, b_cls: int | None, b_share: float) -> float:
        if a_cls is None or b_cls is None or min(a_share, b_share) < self.cfg.class_min_share:
            return 0.0
        ga, gb = CLASS_GROUP.get(a_cls, str(a_cls)), CLASS_GROUP.get(b_cls, str(b_cls))
        if ga == gb:
            return 0.0
        return -self.cfg.class_penalty * (2.0 if "two-wheel" in (ga, gb) else 1.0)

    def score(self, q: Query, cands: list[Candidate], *, record: bool = False) -> list[Scored]:
        """Every allowed candidate of ``q`` scored, best first. ``record``: add the adjusted cosines to
        the calibration samples of their camera pair (once per query)."""
        qa = self.adjusted(q.camera_id, q.embedding)
        raw_by_pair: dict[tuple[str, str], list[float]] = {}
        prelim = []
        for c in cands:
            transit = q.first_ts - c.last_ts
            if not self.transit_ok(c.camera_id, q.camera_id, transit):
                continue
            adj = float(qa @ self.adjusted(c.camera_id, c.embedding))
            raw_by_pair.setdefault((c.camera_id, q.camera_id), []).append(adj)
            prelim.append((c, transit, adj))
        out = []
        for c, transit, adj in prelim:
            med, scale = self._calibration((c.camera_id, q.camera_id))
            z = (adj - med) / scale
            bc = colour_similarity(q.colour, c.colour)
            colour_term = 0.0 if bc is None else self.cfg.colour_weight * (bc - self.cfg.colour_ref)
            cls_term = self._class_term(q.cls, q.cls_share, c.cls, c.cls_share)
            tt = self._transit_term((c.camera_id, q.camera_id), transit)
            out.append(Scored(c.entry_id, c.camera_id, c.global_id, float(transit),
                              float(np.dot(q.embedding, c.embedding)), adj, float(z), bc, cls_term,
                              float(z + colour_term + cls_term + tt), tt, float(c.first_ts), float(c.last_ts)))
        if record:
            for pair, vals in raw_by_pair.items():
                self._record(pair, vals)
        out.sort(key=lambda s: (-s.score, s.entry_id))
        return out

    # ------------------------------------------------------------------ fragments
    def continues(self, prev: Tracklet, prev_emb: np.ndarray, nxt: Tracklet, nxt_emb: np.ndarray) -> float | None:
        """Is ``nxt`` (same camera) the continuation of the broken track ``prev``? Its bias-removed cosine
        when it started at most ``fragment_gap_s`` after ``prev`` ended, within ``fragment_max_distance``
        box sizes of where ``prev`` was heading (its last second of boxes gives the velocity), and looks
        alike (``fragment_min_similarity``); else None."""
        if prev.camera_id != nxt.camera_id:
            return None
        gap = nxt.first_ts - prev.last_ts
        if not 0 <= gap <= self.cfg.fragment_gap_s or nxt.first_frame <= prev.last_frame:
            return None  # too late, or both seen in one frame: two vehicles, whatever they look like
        cx, cy, size = _centre_and_size(prev.boxes[-1].xyxy)
        tail = [b for b in prev.boxes if b.ts >= prev.last_ts - 1.0]
        if len(tail) >= 2 and tail[-1].ts > tail[0].ts:
            x0, y0, _ = _centre_and_size(tail[0].xyxy)
            dt = tail[-1].ts - tail[0].ts
            cx, cy = cx + (cx - x0) / dt * gap, cy + (cy - y0) / dt * gap
        nx, ny, nsize = _centre_and_size(nxt.boxes[0].xyxy)
        if float(np.hypot(nx - cx, ny - cy)) > self.cfg.fragment_max_distance * max(size, nsize):
            return None
        sim = float(self.adjusted(prev.camera_id, prev_emb) @ self.adjusted(nxt.camera_id, nxt_emb))
        return sim if sim >= self.cfg.fragment_min_similarity else None

    # ------------------------------------------------------------------ assignment
    def _eligible(self, s: Scored) -> bool:
        return s.score >= self.cfg.min_score and (self.cfg.min_appearance is None or s.z >= self.cfg.min_appearance)

    def assign(self, queries: list[Query], scored: list[list[Scored]], ready: list[bool],
               blocked: set[tuple[str, str]] = frozenset(), *, learn: bool = True) -> list[PolicyDecision]:
        """Decide the ready queries. ``scored[i]``: query i's candidates (from :meth:`score`); queries not
        ready take part as competitors only. ``blocked``: (entry id, query camera) pairs already claimed.
        ``learn``: the links found teach the transit-time evidence (False: a trial, nothing is kept)."""
        cols: dict[str, int] = {}
        for sc in scored:
            for s in sc:
                cols.setdefault(s.entry_id, len(cols))
        n, m = len(queries), len(cols)
        total = np.full((n, max(m, 1)), -np.inf)
        for i, (q, sc) in enumerate(zip(queries, scored)):
            for s in sc:
                if self._eligible(s) and (s.entry_id, q.camera_id) not in blocked:
                    total[i, cols[s.entry_id]] = s.score
        # one claimant per (entry, query camera): queries of different cameras may share an entry
        assigned: dict[int, int] = {}
        for cam in sorted({q.camera_id for q in queries}):
            rows = [i for i, q in enumerate(queries) if q.camera_id == cam]
            for ri, ci in max_assignment(total[rows]).items():
                assigned[rows[ri]] = ci
        inv = {v: k for k, v in cols.items()}
        out = []
        for i, q in enumerate(queries):
            if not ready[i]:
                continue
            sc = scored[i]
            if i not in assigned:
                best = sc[0] if sc else None
                why = ("no candidate in the topology window" if best is None else
                       f"best score {best.score:.2f} < min_score {self.cfg.min_score:.2f}"
                       if best.score < self.cfg.min_score else
                       f"best appearance z {best.z:.2f} < min_appearance {self.cfg.min_appearance:.2f}"
                       if not self._eligible(best) else "every candidate above min_score was claimed")
                out.append(PolicyDecision(q.query_id, None, sc, why))
                continue
            col = assigned[i]
            chosen = next(s for s in sc if s.entry_id == inv[col])
            alt = max((s.score for s in sc if s.global_id != chosen.global_id
                       and (s.entry_id, q.camera_id) not in blocked), default=-np.inf)
            rival = max((total[k, col] for k, o in enumerate(queries)
                         if k != i and o.camera_id == q.camera_id), default=-np.inf)
            gap = chosen.score - max(alt, rival)
            if gap < self.cfg.margin:
                who = "another vehicle" if alt >= rival else "another query for the same entry"
                out.append(PolicyDecision(q.query_id, None, sc,
                                          f"ambiguous: {chosen.entry_id} ({chosen.score:.2f}) leads {who} by "
                                          f"{gap:.2f} < margin {self.cfg.margin:.2f}"))
                continue
            out.append(PolicyDecision(q.query_id, chosen, sc,
                                      f"best of {len(sc)} (score {chosen.score:.2f}, lead {gap:.2f})"))
            if learn:
                self.learn_transit(chosen.camera_id, q.camera_id, chosen.transit_s)
        return out
