"""Learn the camera topology from a recording: which camera pairs vehicles travel between, and how long.

Input: the embedded tracklets of a replay (``reidd replay --save-embeddings`` writes them; ``reidd topology``
runs that replay itself when given none), with no topology assumed. The association policy scores every
pair of tracklets of two cameras whose transit (first seen in the second camera minus last seen in the
first) lies in ``[0, max_transit]``, on the same calibrated scale the daemon links with (camera bias removed,
z-score against the recording's own stranger pairs, colour and class evidence). A pair counts as a confident
match when each is the other's best in that camera pair, the score reaches ``confident`` (2.5, above the
daemon's ``min_score``) and the runner-up is ``margin`` behind (the daemon's ``matching.margin``).

Strangers that happen to look alike give confident matches at transit times spread over the whole range;
a real link packs its matches into a short span. Per ordered camera pair the cluster is found by iterated
trimming around the median (``4 sigma``, sigma from the IQR or MAD), and its window is the cluster's span
widened by ``pad`` of its width on each side (at least 1 s). The chance level is the count of confident
matches per pair and second over all pairs, times the cluster's span. A link is kept when its cluster holds
at least ``min_matches`` and at least ``min_ratio`` times the chance count. A link A->C whose matches
are mostly explained by a path through a third camera (A->B and B->C both scoring at least
``matching.min_score``, in time order) is reported as indirect and left out: the daemon links such a
vehicle hop by hop.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from reidd.config import MatchingConfig
from reidd.match.policy import AssociationPolicy, Candidate, Query
from reidd.types import TrackletEmbedding


class TopologyError(ValueError):
    """The recording cannot give a topology (the message says why)."""


@dataclass
class PairEstimate:
    """What the recording says about vehicles going from ``src`` to ``dst``."""

    src: str
    dst: str
    transits: list[float]  # transit times of the confident matches, seconds, sorted
    cluster: list[float] = field(default_factory=list)  # the ones in the cluster
    min_s: float | None = None
    max_s: float | None = None
    chance: float = 0.0  # matches expected in the window by chance
    indirect_via: str | None = None
    indirect_share: float = 0.0
    kept: bool = False
    reason: str = ""

    def summary(self) -> str:
        if not self.transits:
            return f"{self.src} -> {self.dst}: no confident match"
        med = float(np.median(self.cluster or self.transits))
        win = "" if self.min_s is None else f", window {self.min_s:.1f}-{self.max_s:.1f} s"
        return (f"{self.src} -> {self.dst}: {len(self.transits)} confident matches, {len(self.cluster)} in the "
                f"cluster (median {med:.1f} s{win}, chance {self.chance:.1f}): {self.reason}")


@dataclass
class TopologyEstimate:
    cameras: list[str]
    tracklets: int
    max_transit: float
    pairs: list[PairEstimate]

    def links(self) -> list[dict]:
        """The kept links as ``matching.topology`` entries (a pair seen both ways with overlapping windows
        becomes one bidirectional link)."""
        kept = {(p.src, p.dst): p for p in self.pairs if p.kept}
        out, done = [], set()
        for (a, b), p in sorted(kept.items()):
            if (a, b) in done:
                continue
            back = kept.get((b, a))
            lo, hi = p.min_s, p.max_s
            both = back is not None and back.min_s <= hi and lo <= back.max_s
            if both:
                lo, hi = min(lo, back.min_s), max(hi, back.max_s)
                done.add((b, a))
            out.append({"src": a, "dst": b, "min_s": round(lo, 1), "max_s": round(hi, 1), "bidirectional": both})
            done.add((a, b))
        return out

    def to_json(self) -> dict:
        return {"cameras": self.cameras, "tracklets": self.tracklets, "max_transit": self.max_transit,
                "links": self.links(), "pairs": [asdict(p) for p in self.pairs]}


def _query(e: TrackletEmbedding, use_class: bool) -> Query:
    t = e.tracklet
    votes = Counter(b.cls for b in t.boxes)
    cls, n = votes.most_common(1)[0] if votes and use_class else (None, 0)
    return Query(t.tracklet_id, t.camera_id, t.first_ts, t.last_ts, e.embedding, cls,
                 n / max(len(t.boxes), 1), e.colour)


def _candidate(q: Query) -> Candidate:
    return Candidate(q.query_id, q.camera_id, 0, q.first_ts, q.last_ts, q.embedding, q.cls, q.cls_share, q.colour)


def _cluster(t: np.ndarray) -> np.ndarray:
    """Iterated 4-sigma trimming around the median; sigma from the IQR or the MAD, whichever is wider (a
    uniform spread of transits has a small MAD for its width), at least 0.5 s."""
    core = t
    for _ in range(5):
        med = float(np.median(core))
        q1, q3 = np.percentile(core, [25, 75])
        sigma = max((q3 - q1) / 1.349, 1.4826 * float(np.median(np.abs(core - med))), 0.5)
        nxt = t[np.abs(t - med) <= 4 * sigma]
        if len(nxt) == 0 or np.array_equal(nxt, core):
            break
        core = nxt
    return core


@dataclass
class PairScores:
    """Every scored (earlier tracklet, later tracklet) pair of two cameras, and each one's best per camera."""

    queries: list[Query]
    camera_of: dict[str, str]
    scores: dict[tuple[str, str], float]  # (entry in the earlier camera, later query) -> calibrated score
    by_query: dict[tuple[str, str], list[tuple[float, str, float]]]  # (query, entry camera) -> (score, entry, transit)
    by_entry: dict[tuple[str, str], list[tuple[float, str, float]]]  # (entry, query camera) -> (score, query, transit)


def score_pairs(items: list[TrackletEmbedding], cfg: MatchingConfig, *, use_class: bool = True,
                max_transit: float | None = None) -> PairScores:
    """Score every pair of tracklets of two cameras that ``cfg``'s topology allows (with no topology: transits
    in ``[0, max_transit]``) on the policy's calibrated scale, calibrated on the recording itself."""
    if max_transit is None:
        windows = [lk.max_s for lk in cfg.topology]
        max_transit = max(windows) if windows else cfg.window_s
    policy = AssociationPolicy(cfg.model_copy(update={"window_s": max_transit, "transit_weight": 0.0}))
    queries = [_query(e, use_class) for e in sorted(items, key=lambda e: (e.tracklet.last_ts,
                                                                        e.tracklet.tracklet_id))]
    for q in queries:  # camera means over the whole recording (the policy's running mean, fed in time order)
        policy.observe(q.camera_id, q.embedding)
    by_first = sorted(queries, key=lambda q: q.first_ts)
    ends = np.array([q.last_ts for q in queries])
    cands = [_candidate(q) for q in queries]

    def candidates_of(q: Query) -> list[Candidate]:
        lo = np.searchsorted(ends, q.first_ts - max_transit, "left")
        hi = np.searchsorted(ends, q.first_ts, "right")
        return [c for c in cands[lo:hi] if c.camera_id != q.camera_id]

    for q in by_first:  # pass 1: the recording's own stranger distribution per camera pair
        policy.score(q, candidates_of(q), record=True)
    out = PairScores(queries, {q.query_id: q.camera_id for q in queries}, {}, defaultdict(list), defaultdict(list))
    for q in by_first:  # pass 2: final calibration
        for s in policy.score(q, candidates_of(q)):
            if s.transit_s < 0:
                continue
            out.scores[(s.entry_id, q.query_id)] = s.score
            out.by_query[(q.query_id, s.camera_id)].append((s.score, s.entry_id, s.transit_s))
            out.by_entry[(s.entry_id, q.camera_id)].append((s.score, q.query_id, s.transit_s))
    return out


def mutual_matches(ps: PairScores, confident: float, margin: float
                   ) -> dict[tuple[str, str], list[tuple[str, str, float, float]]]:
    """Per (src, dst) camera pair: ``(entry, query, transit, score)`` of the pairs that are each other's best in
    that camera pair, score at least ``confident`` and at least ``margin`` ahead of either one's runner-up."""

    def top(lst: list[tuple[float, str, float]]) -> tuple[tuple[float, str, float], float]:
        lst = sorted(lst, key=lambda x: (-x[0], x[1]))
        return lst[0], (lst[1][0] if len(lst) > 1 else -math.inf)

    matches: dict[tuple[str, str], list[tuple[str, str, float, float]]] = defaultdict(list)
    for (qid, src), lst in sorted(ps.by_query.items()):
        (sc, eid, transit), second = top(lst)
        if sc < confident or sc - second < margin:
            continue
        (_, qid2, _), second2 = top(ps.by_entry[(eid, ps.camera_of[qid])])
        if qid2 != qid or sc - second2 < margin:
            continue
        matches[(src, ps.camera_of[qid])].append((eid, qid, transit, sc))
    return matches


def learn_topology(
    items: list[TrackletEmbedding],
    cfg: MatchingConfig,
    *,
    use_class: bool = True,
    max_transit: float | None = None,
    confident: float = 2.5,
    margin: float | None = None,
    min_matches: int = 5,
    min_ratio: float = 10.0,
    pad: float = 0.5,
    indirect_share: float = 0.5,
) -> TopologyEstimate:
    """Estimate the topology from embedded tracklets (see the module docstring for the method)."""
    max_transit = float(max_transit or cfg.window_s)
    margin = cfg.margin if margin is None else margin
    if max_transit <= 0:
        raise TopologyError("max_transit must be > 0")
    cams = sorted({e.tracklet.camera_id for e in items})
    if len(cams) < 2:
        raise TopologyError(f"the recording has embedded tracklets of {len(cams)} camera(s); a topology needs two")
    ps = score_pairs(items, cfg.model_copy(update={"topology": []}), use_class=use_class, max_transit=max_transit)
    queries, scores = ps.queries, ps.scores
    matches = {k: [(e, q, t) for e, q, t, _ in v] for k, v in mutual_matches(ps, confident, margin).items()}

    # background: confident matches per camera pair and second, over every pair (strangers that look alike
    # land anywhere in [0, max_transit]; a link packs its matches into a short window)
    total = sum(len(v) for v in matches.values())
    n_pairs = len(cams) * (len(cams) - 1)
    background = max(total, 1) / (n_pairs * max_transit)
    pairs: list[PairEstimate] = []
    for a in cams:
        for b in cams:
            if a == b:
                continue
            ms = sorted(matches.get((a, b), []), key=lambda m: m[2])
            t = np.array([m[2] for m in ms], np.float64)
            p = PairEstimate(a, b, [round(float(v), 3) for v in t])
            pairs.append(p)
            if len(t) == 0:
                p.reason = "no confident match"
                continue
            core = _cluster(t)
            lo, hi = float(core.min()), float(core.max())
            widen = max(1.0, pad * (hi - lo))
            p.min_s, p.max_s = max(0.0, lo - widen), min(max_transit, hi + widen)
            p.cluster = [round(float(v), 3) for v in core]
            p.chance = background * max(hi - lo, 2.0)  # matches that chance alone would put in the cluster's span
            if len(core) < min_matches:
                p.reason = f"too few matches in the cluster ({len(core)} < {min_matches})"
            elif len(core) < min_ratio * p.chance:
                p.reason = (f"not above chance ({len(core)} matches in {hi - lo:.1f} s; chance alone gives "
                            f"{p.chance:.1f}, a link needs {min_ratio:g}x that)")
            else:
                p.kept, p.reason = True, "link"
            p._matches = [m for m in ms if p.min_s <= m[2] <= p.max_s]  # type: ignore[attr-defined]

    # indirect links: A->C explained by A->B->C
    kept = {(p.src, p.dst): p for p in pairs if p.kept}
    floor = cfg.min_score
    for (a, c), p in kept.items():
        for b in cams:
            if b in (a, c) or (a, b) not in kept or (b, c) not in kept:
                continue
            mids = [q for q in queries if q.camera_id == b]
            explained = 0
            for eid, qid, _ in p._matches:  # type: ignore[attr-defined]
                if any(scores.get((eid, m.query_id), -math.inf) >= floor
                       and scores.get((m.query_id, qid), -math.inf) >= floor for m in mids):
                    explained += 1
            share = explained / max(len(p._matches), 1)  # type: ignore[attr-defined]
            if share > p.indirect_share:
                p.indirect_via, p.indirect_share = b, round(share, 3)
        if p.indirect_via is not None and p.indirect_share >= indirect_share:
            p.kept = False
            p.reason = (f"indirect: {p.indirect_share:.0%} of its matches also pass through {p.indirect_via} "
                        f"({a} -> {p.indirect_via} -> {c})")
    for p in pairs:
        p.__dict__.pop("_matches", None)
    return TopologyEstimate(cams, len(items), max_transit, pairs)


def write_topology_yaml(est: TopologyEstimate, path: str | Path, *, source: str = "") -> Path:
    """The ``matching.topology`` block, with one comment line per examined camera pair."""
    import yaml

    lines = [f"# reidd topology: learned from {est.tracklets} embedded tracklets of cameras "
             f"{', '.join(est.cameras)}{f' ({source})' if source else ''}",
             f"# transits searched: 0-{est.max_transit:g} s. Review the windows (plots beside this file), then",
             "# paste the matching block into cameras.yaml."]
    lines += [f"#   {p.summary()}" for p in est.pairs if p.transits]
    body = yaml.safe_dump({"matching": {"topology": est.links()}}, sort_keys=False)
    path = Path(path)
    path.write_text("\n".join(lines) + "\n" + body, encoding="utf-8")
    return path


def plot_links(est: TopologyEstimate, out_dir: str | Path, stem: str = "topology") -> list[Path]:
    """One PNG per camera pair with confident matches: the transit histogram, the window and the verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for p in est.pairs:
        if not p.transits:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2))
        t = np.array(p.transits)
        hi = max(float(t.max()), p.max_s or 0.0) * 1.05 + 1
        bins = np.linspace(0, hi, 60)
        ax.hist(t, bins=bins, color="#9db4c0", label="confident matches")
        if p.cluster:
            ax.hist(p.cluster, bins=bins, color="#1f77b4", label="cluster")
        if p.min_s is not None:
            ax.axvspan(p.min_s, p.max_s, color="#2ca02c" if p.kept else "#d62728", alpha=0.15,
                       label=f"window {p.min_s:.1f}-{p.max_s:.1f} s")
        ax.set_xlabel("transit time, s (first seen in dst - last seen in src)")
        ax.set_ylabel("matches")
        verdict = "link" if p.kept else p.reason.split(":")[0]
        ax.set_title(f"{p.src} -> {p.dst}: {verdict}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(out_dir) / f"{stem}-{p.src}-{p.dst}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        out.append(path)
    return out


def write_report(est: TopologyEstimate, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(est.to_json(), indent=1), encoding="utf-8")
    return path
