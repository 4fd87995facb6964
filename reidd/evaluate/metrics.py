"""Re-identification metrics: mAP, CMC (Rank-k) and mINP under the VeRi / Market protocol.

Protocol, for every query:

* the gallery is ranked by increasing distance to the query; **ties are broken by gallery order**
  (a stable sort: of two gallery items at the same distance, the one with the lower index in the
  gallery arrays ranks first), so results are deterministic;
* gallery items with the same identity *and* the same camera as the query are dropped
  (``exclude_same_camera``), as are gallery items that are the query sample itself
  (same sample id, when ``q_ids``/``g_ids`` are given);
* the positives are the remaining gallery items with the query's identity. A query without any
  positive left is *invalid*: it is listed in :attr:`ReidResult.invalid_queries` and left out of
  every mean.

Per valid query with positives at ranks ``r_1 < ... < r_n`` (1-based, among the kept items):

* AP = (1/n) * sum_i i / r_i (non-interpolated average precision);
* CMC: Rank-k is 1 when r_1 <= k;
* INP = n / r_n (Ye et al., 2021, "Deep Learning for Person Re-identification: A Survey and Outlook").

Distances are computed for ``chunk_size`` queries at a time, so the full query x gallery matrix
never exists: peak memory is about ``12 * chunk_size * n_gallery`` bytes plus the features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

METRICS = ("cosine", "euclidean")


@dataclass
class ReidResult:
    """Outcome of one re-ID evaluation. ``cmc[k-1]`` is the Rank-k accuracy."""

    mAP: float
    mINP: float
    cmc: np.ndarray
    num_queries: int
    num_valid: int
    invalid_queries: list[int] = field(default_factory=list)

    def rank(self, k: int) -> float:
        """Rank-k accuracy (fraction of valid queries with a positive in the top k)."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"rank k must be in 1..{len(self.cmc)} (max_rank of this evaluation), got {k}")
        return float(self.cmc[k - 1])

    def as_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable summary: mAP, mINP, rank1/5/10 (those within max_rank), counts."""
        out: dict[str, Any] = {"mAP": float(self.mAP), "mINP": float(self.mINP)}
        for k in (1, 5, 10):
            if k <= len(self.cmc):
                out[f"rank{k}"] = self.rank(k)
        out["num_queries"] = int(self.num_queries)
        out["num_valid"] = int(self.num_valid)
        out["num_invalid"] = len(self.invalid_queries)
        return out


# --------------------------------------------------------------------------- input checks
def _features(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n, dim), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: is empty")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _labels(name: str, x: Any, n: int) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name}: expected a 1-D array of length {n}, got shape {arr.shape}")
    return arr


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")


def _joint_codes(q: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map query and gallery labels (any hashable dtype) onto shared int64 codes."""
    _, inv = np.unique(np.concatenate([q, g]), return_inverse=True)
    inv = inv.astype(np.int64).reshape(-1)
    return inv[: len(q)], inv[len(q) :]


# --------------------------------------------------------------------------- distances
def _prepare(x: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalise for cosine, or precompute squared norms for euclidean."""
    import torch.nn.functional as F

    if metric == "cosine":
        return F.normalize(x, dim=1), None
    return x, (x * x).sum(dim=1)


def _dist_block(
    q: torch.Tensor, q_sq: torch.Tensor | None, g: torch.Tensor, g_sq: torch.Tensor | None, metric: str
) -> torch.Tensor:
    """Distances between prepared query rows and prepared gallery rows (float32)."""
    if metric == "cosine":
        return q.new_ones(1, 1).addmm(q, g.T, alpha=-1.0).clamp_(0.0, 2.0)
    assert q_sq is not None and g_sq is not None
    d = q_sq[:, None] + g_sq[None, :]
    d.addmm_(q, g.T, alpha=-2.0)
    return d.clamp_(min=0.0).sqrt_()


def pairwise_distance(q: np.ndarray, g: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Distance matrix (nq, ng), float32.

    ``cosine``: 1 - cosine similarity (features are L2-normalised inside), in [0, 2].
    ``euclidean``: L2 distance of the features as given.
    """
    import torch

    _check_metric(metric)
    qa, ga = _features("q", q), _features("g", g)
    if qa.shape[1] != ga.shape[1]:
        raise ValueError(f"q and g: feature dims differ ({qa.shape[1]} vs {ga.shape[1]})")
    qt, q_sq = _prepare(torch.from_numpy(qa), metric)
    gt, g_sq = _prepare(torch.from_numpy(ga), metric)
    return _dist_block(qt, q_sq, gt, g_sq, metric).numpy()


# --------------------------------------------------------------------------- ranking core
class _Groups:
    """Gallery indices grouped by label code: the members of code k are ``index[start[k]:start[k + 1]]``."""

    def __init__(self, codes: np.ndarray, n_codes: int) -> None:
        self.index = np.argsort(codes, kind="stable")
        self.start = np.searchsorted(codes[self.index], np.arange(n_codes + 1))

    def expand(self, q_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, gallery index) of every gallery item sharing the code of query row ``row``."""
        counts = self.start[q_codes + 1] - self.start[q_codes]
        rows = np.repeat(np.arange(len(q_codes)), counts)
        first = np.repeat(self.start[q_codes] - (np.cumsum(counts) - counts), counts)
        return rows, self.index[first + np.arange(len(rows))]


def _score_block(
    dist: np.ndarray,
    qp: np.ndarray,
    qc: np.ndarray,
    qi: np.ndarray | None,
    gc: np.ndarray,
    gp: np.ndarray,
    gi: np.ndarray | None,
    by_pid: _Groups,
    by_id: _Groups | None,
    exclude_same_camera: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-query AP, INP, first positive rank (0 if none) and positive count for a block of queries.

    Gallery item j precedes item k in a query's ranking when (d_j, j) < (d_k, k). Rather than
    arg-sorting every row, each positive's rank is counted: 1 + (items before it) - (dropped items
    before it), from a value sort of the row (fast) and a lexicographic sort of the few positives and
    dropped items.
    """
    import torch

    c = dist.shape[0]
    # positives and dropped items, from the gallery items sharing the query's pid (or sample id)
    rows, cols = by_pid.expand(qp)
    junk = np.zeros(len(rows), dtype=bool)
    if exclude_same_camera:
        junk |= gc[cols] == qc[rows]
    if by_id is not None and qi is not None and gi is not None:
        junk |= gi[cols] == qi[rows]
        jr, jcol = by_id.expand(qi)
        other = gp[jcol] != qp[jr]  # the query's own sample filed under another pid
        rows = np.concatenate([rows, jr[other]])
        cols = np.concatenate([cols, jcol[other]])
        junk = np.concatenate([junk, np.ones(int(other.sum()), dtype=bool)])
    pr, pcol = rows[~junk], cols[~junk]
    npos = np.bincount(pr, minlength=c)
    ap = np.zeros(c)
    inp = np.zeros(c)
    first = np.zeros(c, dtype=np.int64)
    if len(pr) == 0:
        return ap, inp, first, npos

    # items strictly closer than each positive, and items at exactly its distance
    pd = dist[pr, pcol]
    offsets = np.cumsum(npos) - npos
    within = np.arange(len(pr)) - offsets[pr]
    padded = np.full((c, int(npos.max())), np.inf, dtype=np.float32)
    padded[pr, within] = pd
    srt = torch.from_numpy(np.sort(dist, axis=1))
    pad_t = torch.from_numpy(padded)
    less = torch.searchsorted(srt, pad_t).numpy()[pr, within]
    equal = torch.searchsorted(srt, pad_t, right=True).numpy()[pr, within] - less
    del srt, pad_t
    before = less.astype(np.int64)
    # rows where a positive ties with another item: its position in a stable arg-sort of the row
    tie_rows = np.unique(pr[equal > 1])
    for s in range(0, len(tie_rows), 256):
        sub = tie_rows[s : s + 256]
        pos = np.empty((len(sub), dist.shape[1]), dtype=np.int64)
        np.put_along_axis(pos, np.argsort(dist[sub], axis=1, kind="stable"), np.arange(dist.shape[1])[None], axis=1)
        hit = np.flatnonzero(np.isin(pr, sub))
        before[hit] = pos[np.searchsorted(sub, pr[hit]), pcol[hit]]

    # dropped items ahead of each positive, and each positive's order among its row's positives
    order = np.lexsort((cols, dist[rows, cols], rows))
    junk_sorted = junk[order].astype(np.int64)
    junk_cum = np.cumsum(junk_sorted) - junk_sorted  # dropped items before, whole block
    row_start = np.searchsorted(rows[order], np.arange(c))
    pos_slots = np.flatnonzero(junk_sorted == 0)
    r = rows[order[pos_slots]]  # positives, by row then by ranking order
    junk_before = junk_cum[pos_slots] - junk_cum[row_start[r]]
    rank_of = np.cumsum(~junk) - 1  # index into pr/pcol of each non-dropped entry
    ranks = (1 + before[rank_of[order[pos_slots]]] - junk_before).astype(np.float64)
    i = np.arange(len(r)) - offsets[r] + 1.0  # 1-based order of the positive within its query
    ap += np.bincount(r, weights=i / ranks, minlength=c)
    valid = npos > 0
    ap[valid] /= npos[valid]
    first[valid] = ranks[offsets[valid]].astype(np.int64)
    inp[valid] = npos[valid] / ranks[offsets[valid] + npos[valid] - 1]
    return ap, inp, first, npos


class _Protocol:
    """Validated labels as int64 codes, shared by :func:`evaluate` and :func:`evaluate_distmat`."""

    def __init__(
        self,
        nq: int,
        ng: int,
        q_pids: Any,
        g_pids: Any,
        q_camids: Any,
        g_camids: Any,
        q_ids: Any,
        g_ids: Any,
        max_rank: int,
        chunk_size: int,
    ) -> None:
        if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
            raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
        if (q_ids is None) != (g_ids is None):
            raise ValueError("q_ids and g_ids: give both (sample ids of queries and gallery) or neither")
        self.qp, self.gp = _joint_codes(_labels("q_pids", q_pids, nq), _labels("g_pids", g_pids, ng))
        self.qc, self.gc = _joint_codes(_labels("q_camids", q_camids, nq), _labels("g_camids", g_camids, ng))
        self.by_pid = _Groups(self.gp, int(max(self.qp.max(), self.gp.max())) + 1)
        self.qi: np.ndarray | None = None
        self.gi: np.ndarray | None = None
        self.by_id: _Groups | None = None
        if q_ids is not None:
            self.qi, self.gi = _joint_codes(_labels("q_ids", q_ids, nq), _labels("g_ids", g_ids, ng))
            self.by_id = _Groups(self.gi, int(max(self.qi.max(), self.gi.max())) + 1)
        self.nq, self.max_rank, self.chunk_size = nq, int(max_rank), int(chunk_size)
        self.ap = np.zeros(nq)
        self.inp = np.zeros(nq)
        self.first = np.zeros(nq, dtype=np.int64)
        self.npos = np.zeros(nq, dtype=np.int64)

    def chunks(self, desc: str, progress: bool) -> Any:
        from tqdm import tqdm

        starts = range(0, self.nq, self.chunk_size)
        return tqdm(starts, desc=desc, unit="chunk", leave=False, disable=not progress or len(starts) < 2)

    def score(self, s: int, dist: np.ndarray, exclude_same_camera: bool) -> None:
        e = s + dist.shape[0]
        qi = None if self.qi is None else self.qi[s:e]
        ap, inp, first, npos = _score_block(
            dist, self.qp[s:e], self.qc[s:e], qi, self.gc, self.gp, self.gi, self.by_pid, self.by_id,
            exclude_same_camera,
        )
        self.ap[s:e], self.inp[s:e], self.first[s:e], self.npos[s:e] = ap, inp, first, npos

    def result(self) -> ReidResult:
        valid = self.npos > 0
        n_valid = int(valid.sum())
        if n_valid == 0:
            raise ValueError(
                f"no query has a valid positive in the gallery ({self.nq} queries): check q_pids/g_pids, "
                "camids and exclude_same_camera"
            )
        hist = np.bincount(np.minimum(self.first[valid], self.max_rank + 1) - 1, minlength=self.max_rank + 1)
        cmc = (np.cumsum(hist[: self.max_rank]) / n_valid).astype(np.float32)
        return ReidResult(
            mAP=float(self.ap[valid].mean()),
            mINP=float(self.inp[valid].mean()),
            cmc=cmc,
            num_queries=self.nq,
            num_valid=n_valid,
            invalid_queries=np.flatnonzero(~valid).tolist(),
        )


def evaluate(
    qf: np.ndarray,
    gf: np.ndarray,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    metric: str = "cosine",
    max_rank: int = 50,
    chunk_size: int = 2048,
    exclude_same_camera: bool = True,
    q_ids: Any = None,
    g_ids: Any = None,
    device: str = "cpu",
    progress: bool = True,
) -> ReidResult:
    """mAP / CMC / mINP of query features ``qf`` (nq, d) against gallery features ``gf`` (ng, d).

    Labels (pids, camids, sample ids) may be ints or strings. Distances are computed for
    ``chunk_size`` queries at a time (peak memory ~ ``12 * chunk_size * ng`` bytes); ``device``
    may be ``"cuda"`` to compute the distances on the GPU (ranking runs on the CPU). See the module
    docstring for the protocol and the tie rule.
    """
    import torch

    _check_metric(metric)
    qa, ga = _features("qf", qf), _features("gf", gf)
    if qa.shape[1] != ga.shape[1]:
        raise ValueError(f"qf and gf: feature dims differ ({qa.shape[1]} vs {ga.shape[1]})")
    proto = _Protocol(len(qa), len(ga), q_pids, g_pids, q_camids, g_camids, q_ids, g_ids, max_rank, chunk_size)
    dev = torch.device(device)
    with torch.inference_mode():
        g, g_sq = _prepare(torch.from_numpy(ga).to(dev), metric)
        for s in proto.chunks("evaluate", progress):
            q, q_sq = _prepare(torch.from_numpy(qa[s : s + proto.chunk_size]).to(dev), metric)
            dist = _dist_block(q, q_sq, g, g_sq, metric).cpu().numpy()
            proto.score(s, dist, exclude_same_camera)
            del dist
    return proto.result()


def evaluate_distmat(
    distmat: np.ndarray,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    *,
    max_rank: int = 50,
    exclude_same_camera: bool = True,
    q_ids: Any = None,
    g_ids: Any = None,
    chunk_size: int = 2048,
    progress: bool = True,
) -> ReidResult:
    """Same protocol as :func:`evaluate` from a precomputed (nq, ng) distance matrix (e.g. re-ranked)."""
    d = np.asarray(distmat)
    if d.ndim != 2 or 0 in d.shape:
        raise ValueError(f"distmat: expected a non-empty 2-D array (nq, ng), got shape {d.shape}")
    if not np.issubdtype(d.dtype, np.number):
        raise ValueError(f"distmat: expected numbers, got dtype {d.dtype}")
    if np.isnan(d).any():
        raise ValueError("distmat: contains NaN values")
    proto = _Protocol(d.shape[0], d.shape[1], q_pids, g_pids, q_camids, g_camids, q_ids, g_ids, max_rank, chunk_size)
    for s in proto.chunks("evaluate", progress):
        block = np.ascontiguousarray(d[s : s + proto.chunk_size], dtype=np.float32)
        proto.score(s, block, exclude_same_camera)
    return proto.result()


# --------------------------------------------------------------------------- tracklet pooling
def average_by_track(
    features: np.ndarray, track_ids: Any, pids: Any, camids: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Temporal pooling for tracklet-level evaluation.

    Each track's feature is the mean of its L2-normalised image features, re-normalised. Tracks are
    returned in order of first appearance; every image of a track must share one pid and one camid.
    Returns ``(features (T, d) float32, track_ids (T,), pids (T,), camids (T,))``.
    """
    f = _features("features", features)
    n = len(f)
    tids = _labels("track_ids", track_ids, n)
    p = _labels("pids", pids, n)
    c = _labels("camids", camids, n)
    uniq, first, inv = np.unique(tids, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    order = np.argsort(first, kind="stable")  # tracks in order of first appearance
    remap = np.empty(len(uniq), dtype=np.int64)
    remap[order] = np.arange(len(uniq))
    code = remap[inv]
    head = first[order]  # index of each track's first image
    for name, lab in (("pids", p), ("camids", c)):
        bad = np.flatnonzero(lab != lab[head][code])
        if len(bad):
            i = int(bad[0])
            track, was, now = tids[i].item(), lab[head][code][i].item(), lab[i].item()
            raise ValueError(
                f"{name}: track {track!r} mixes values {was!r} and {now!r} "
                "(every image of a track must share one pid and one camid)"
            )
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    fn = f / np.maximum(norm, 1e-12)
    by_track = np.argsort(code, kind="stable")
    starts = np.searchsorted(code[by_track], np.arange(len(uniq)))
    sums = np.add.reduceat(fn[by_track].astype(np.float64), starts, axis=0)
    pooled = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32), tids[head], p[head], c[head]
