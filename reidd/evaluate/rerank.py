"""Post-processing of re-ID retrieval: k-reciprocal re-ranking, query expansion, database
augmentation, tracklet distance averaging and embedding averaging.

Features are numpy arrays (n, d); every function that returns features returns them L2-normalised
float32. Similarities are cosine similarities of L2-normalised features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from reidd.evaluate.metrics import _check_metric, _dist_block, _features, _labels, _prepare, pairwise_distance

if TYPE_CHECKING:
    import torch

#: Default bound on nq + ng for :func:`k_reciprocal_rerank` (its time grows with the square).
MAX_RERANK_SAMPLES = 25_000


def _pair_features(name_q: str, qf: Any, name_g: str, gf: Any) -> tuple[np.ndarray, np.ndarray]:
    q, g = _features(name_q, qf), _features(name_g, gf)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"{name_q} and {name_g}: feature dims differ ({q.shape[1]} vs {g.shape[1]})")
    return q, g


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    return int(v)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    return F.normalize(x, dim=1)


# --------------------------------------------------------------------------- k-reciprocal re-ranking
def _nearest(x: torch.Tensor, x_sq: torch.Tensor | None, metric: str, k: int, chunk: int, progress: bool) -> Any:
    """(N, k) indices of each sample's k nearest samples, the sample itself always first."""
    import torch
    from tqdm import tqdm

    n = len(x)
    nn = torch.empty((n, k), dtype=torch.int64)
    for s in tqdm(range(0, n, chunk), desc="rerank: neighbours", unit="chunk", leave=False,
                  disable=not progress or n <= chunk):
        e = min(s + chunk, n)
        d = _dist_block(x[s:e], None if x_sq is None else x_sq[s:e], x, x_sq, metric)
        d[torch.arange(e - s), torch.arange(s, e)] = -1.0  # self ranks first, whatever the duplicates
        nn[s:e] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices
    return nn


def _reciprocal(nn: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R(p, k) as padded candidates (N, k+1) and a mask: g in N(p, k) and p in N(g, k)."""
    import torch

    cand = nn[:, : k + 1]
    me = torch.arange(len(nn))[:, None]
    mask = torch.zeros(cand.shape, dtype=torch.bool)
    for s in range(0, len(nn), 4096):  # bounds the (rows, k+1, k+1) look-up
        back = nn[cand[s : s + 4096]][:, :, : k + 1]
        mask[s : s + 4096] = (back == me[s : s + 4096, :, None]).any(dim=2)
    return cand, mask


def _paired_distance(x: torch.Tensor, x_sq: torch.Tensor | None, rows: torch.Tensor, cols: torch.Tensor,
                     metric: str) -> torch.Tensor:
    """d(x[rows[i]], x[cols[i]]) for each i, in batches that bound the gathered features."""
    import torch

    out = torch.empty(len(rows), dtype=torch.float32)
    step = max(1, (1 << 22) // x.shape[1])
    for s in range(0, len(rows), step):
        a, b = x[rows[s : s + step]], x[cols[s : s + step]]
        dot = (a * b).sum(dim=1)
        if metric == "cosine":
            out[s : s + step] = (1.0 - dot).clamp_(0.0, 2.0)
        else:
            assert x_sq is not None
            sq = x_sq[rows[s : s + step]] + x_sq[cols[s : s + step]] - 2.0 * dot
            out[s : s + step] = sq.clamp_(min=0.0).sqrt_()
    return out


def _expanded_sets(cand: torch.Tensor, mask: torch.Tensor, cand_h: torch.Tensor, mask_h: torch.Tensor,
                   chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """R*(p, k1) for every p, as (rows, cols) of the non-zero entries.

    R*(p) = R(p, k1) plus R(q, k1/2) for each q in R(p, k1) whose R(q, k1/2) shares at least 2/3
    of its members with R(p, k1).
    """
    import torch

    n = len(cand)
    size_h = mask_h.sum(dim=1)
    out_rows, out_cols = [], []
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        c = e - s
        r = torch.arange(c)
        member = torch.zeros((c, n), dtype=torch.bool)
        rr = r[:, None].expand(-1, cand.shape[1])
        member[rr[mask[s:e]], cand[s:e][mask[s:e]]] = True
        q = cand[s:e]  # (c, k1+1)
        sub = cand_h[q]  # (c, k1+1, kh+1): R(q, k1/2) candidates of each q
        sub_mask = mask_h[q]
        inter = (member[r[:, None, None], sub] & sub_mask).sum(dim=2)
        accept = mask[s:e] & (3 * inter >= 2 * size_h[q])
        add = sub_mask & accept[:, :, None]
        rsub = r[:, None, None].expand_as(sub)
        member[rsub[add], sub[add]] = True
        i, j = member.nonzero(as_tuple=True)
        out_rows.append(i + s)
        out_cols.append(j)
    return torch.cat(out_rows), torch.cat(out_cols)


def _jaccard(v: Any, nq: int, progress: bool, pair_budget: int = 1 << 23) -> np.ndarray:
    """Jaccard distance 1 - sum(min) / sum(max) between rows 0..nq-1 and rows nq.. of sparse V."""
    from tqdm import tqdm

    vq = v[:nq].tocsr()
    vg_t = v[nq:].T.tocsr()  # per sample j: the gallery rows with V[g, j] > 0
    ng = vg_t.shape[1]
    sq = np.asarray(vq.sum(axis=1)).reshape(-1)
    sg = np.asarray(vg_t.sum(axis=0)).reshape(-1)
    col_count = np.diff(vg_t.indptr)
    # pairs each query row generates in the join; split the rows into blocks within the budget
    pairs = np.add.reduceat(np.append(col_count[vq.indices], 0), vq.indptr[:-1]) * (np.diff(vq.indptr) > 0)
    rows_cap = max(1, pair_budget // max(ng, 1))
    blocks, s = [], 0
    while s < nq:
        e, total = s, 0
        while e < nq and e - s < rows_cap and (e == s or total + pairs[e] <= pair_budget):
            total += pairs[e]
            e += 1
        blocks.append((s, e))
        s = e
    out = np.empty((nq, ng), dtype=np.float32)
    for s, e in tqdm(blocks, desc="rerank: jaccard", unit="block", leave=False,
                     disable=not progress or len(blocks) < 2):
        a0, a1 = vq.indptr[s], vq.indptr[e]
        cols, vals = vq.indices[a0:a1], vq.data[a0:a1]
        qrow = np.repeat(np.arange(e - s), np.diff(vq.indptr[s : e + 1]))
        counts = col_count[cols]
        total = int(counts.sum())
        starts = vg_t.indptr[cols]
        pos = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
        mins = np.minimum(np.repeat(vals, counts), vg_t.data[pos])
        flat = np.repeat(qrow, counts) * ng + vg_t.indices[pos]
        m = np.bincount(flat, weights=mins, minlength=(e - s) * ng).reshape(e - s, ng)
        out[s:e] = np.clip(1.0 - m / (sq[s:e, None] + sg[None, :] - m), 0.0, 1.0)
    return out


def k_reciprocal_rerank(
    qf: np.ndarray,
    gf: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "cosine",
    *,
    max_samples: int | None = MAX_RERANK_SAMPLES,
    chunk_size: int = 1024,
    progress: bool = True,
) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong et al., CVPR 2017); returns the final (nq, ng) float32 distance.

    Over all N = nq + ng samples (queries included: the method is transductive), with ``d`` the
    ``metric`` distance and N(p, k) = p and its k nearest other samples:

    * R(p, k) = {g in N(p, k) : p in N(g, k)} (k-reciprocal neighbours);
    * R*(p, k1) = R(p, k1) plus every R(q, k1/2), q in R(p, k1), that shares >= 2/3 of its members
      with R(p, k1);
    * V[p, g] = exp(-d(p, g)) for g in R*(p, k1), else 0; then local query expansion replaces V[p]
      by the mean of V over the k2 nearest samples of p (p included; ``k2=1`` turns it off);
    * d_J(p, g) = 1 - sum_j min(V[p, j], V[g, j]) / sum_j max(V[p, j], V[g, j]);
    * final = (1 - lambda_value) * d_J + lambda_value * d, so ``lambda_value=1`` returns
      :func:`~reidd.evaluate.metrics.pairwise_distance` exactly.

    The weights exp(-d) assume distances of order 1: with ``metric="euclidean"`` pass L2-normalised
    (or similarly scaled) features, or every V row collapses onto its own sample.

    Cost: all (nq + ng)^2 distances are computed (in chunks of ``chunk_size`` rows, never stored
    whole), so time grows with the square of nq + ng; V is sparse. Above ``max_samples`` samples
    (default 25,000; ``None`` lifts the guard) a ValueError is raised rather than running for hours.
    """
    import scipy.sparse as sp
    import torch

    _check_metric(metric)
    q, g = _pair_features("qf", qf, "gf", gf)
    k1, k2 = _positive_int("k1", k1), _positive_int("k2", k2)
    chunk_size = _positive_int("chunk_size", chunk_size)
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value: expected a number in [0, 1], got {lambda_value!r}")
    nq, n = len(q), len(q) + len(g)
    if max_samples is not None and n > max_samples:
        raise ValueError(
            f"k_reciprocal_rerank: {nq} queries + {len(g)} gallery = {n} samples exceeds max_samples={max_samples}; "
            "its cost grows with (nq + ng)^2: evaluate a subset or raise max_samples"
        )
    k1, k2 = min(k1, n - 1), min(k2, n)
    kh = max(1, round(k1 / 2))
    with torch.inference_mode():
        x, x_sq = _prepare(torch.from_numpy(np.concatenate([q, g])), metric)
        nn = _nearest(x, x_sq, metric, max(k1 + 1, k2), chunk_size, progress)
        cand, mask = _reciprocal(nn, k1)
        cand_h, mask_h = _reciprocal(nn, kh)
        rows, cols = _expanded_sets(cand, mask, cand_h, mask_h, chunk_size)
        weights = torch.exp(-_paired_distance(x, x_sq, rows, cols, metric).double())
        v = sp.csr_matrix((weights.numpy(), (rows.numpy(), cols.numpy())), shape=(n, n))
        if k2 > 1:
            nb = nn[:, :k2].numpy().reshape(-1)
            expand = sp.csr_matrix((np.full(n * k2, 1.0 / k2), (np.repeat(np.arange(n), k2), nb)), shape=(n, n))
            v = expand @ v
    jaccard = _jaccard(v, nq, progress)
    out = pairwise_distance(q, g, metric) * np.float32(lambda_value)
    out += np.float32(1.0 - lambda_value) * jaccard
    return out


# --------------------------------------------------------------------------- expansion / augmentation
def _neighbourhood_mean(src: np.ndarray, pool: np.ndarray, m: int, alpha: float, same: bool) -> np.ndarray:
    """normalise(src_i + sum over its m most similar pool items of max(sim, 0)^alpha * item)."""
    import torch

    s_t = _normalise(torch.from_numpy(src))
    p_t = _normalise(torch.from_numpy(pool))
    m = min(m, len(pool) - (1 if same else 0))
    if m <= 0:
        return s_t.numpy()
    out = torch.empty_like(s_t)
    step = max(1, min(2048, (1 << 22) // max(1, m * s_t.shape[1])))
    for s in range(0, len(s_t), step):
        e = min(s + step, len(s_t))
        sim = s_t[s:e] @ p_t.T
        if same:
            sim[torch.arange(e - s), torch.arange(s, e)] = -torch.inf
        vals, idx = torch.topk(sim, m, dim=1, largest=True, sorted=True)
        w = vals.clamp(min=0.0) ** alpha if alpha > 0 else torch.ones_like(vals)
        out[s:e] = s_t[s:e] + (w[:, :, None] * p_t[idx]).sum(dim=1)
    return _normalise(out).numpy()


def _alpha(alpha: Any) -> float:
    a = float(alpha)
    if not np.isfinite(a) or a < 0:
        raise ValueError(f"alpha: expected a finite number >= 0, got {alpha!r}")
    return a


def query_expansion(qf: np.ndarray, gf: np.ndarray, k: int = 5, alpha: float = 0.0) -> np.ndarray:
    """Query expansion: each query becomes the (weighted) mean of itself and its k-1 most similar
    gallery features, re-normalised.

    ``alpha=0``: average QE (all weights 1); ``alpha>0``: alpha-QE (Radenović et al., 2018), weights
    max(cos sim, 0)^alpha (the query's own weight is 1). ``k=1`` returns the normalised queries.
    """
    q, g = _pair_features("qf", qf, "gf", gf)
    return _neighbourhood_mean(q, g, _positive_int("k", k) - 1, _alpha(alpha), same=False)


def database_augmentation(gf: np.ndarray, k: int = 5, alpha: float = 0.0) -> np.ndarray:
    """Database-side augmentation (DBA): each gallery feature becomes the (weighted) mean of its top-k
    neighbourhood in the gallery, itself included, re-normalised. Weights as in :func:`query_expansion`;
    ``k=1`` returns the normalised gallery.
    """
    g = _features("gf", gf)
    return _neighbourhood_mean(g, g, _positive_int("k", k) - 1, _alpha(alpha), same=True)


# --------------------------------------------------------------------------- tracklets / ensembles
def track_distance_average(distmat: np.ndarray, g_track_ids: Any) -> np.ndarray:
    """Each gallery column replaced by the mean distance over the columns of its tracklet.

    ``g_track_ids`` (ng,) labels the gallery items (ints or strings); the result has the same shape
    as ``distmat`` (float32) and is identical across the columns of one tracklet.
    """
    import scipy.sparse as sp

    d = np.asarray(distmat)
    if d.ndim != 2 or 0 in d.shape:
        raise ValueError(f"distmat: expected a non-empty 2-D array (nq, ng), got shape {d.shape}")
    d = d.astype(np.float32, copy=False)
    tids = _labels("g_track_ids", g_track_ids, d.shape[1])
    _, code, counts = np.unique(tids, return_inverse=True, return_counts=True)
    code = code.reshape(-1)
    onehot = sp.csr_matrix(
        (np.ones(len(code), dtype=np.float64), (np.arange(len(code)), code)), shape=(len(code), len(counts))
    )
    out = np.empty(d.shape, dtype=np.float32)
    step = max(1, (1 << 22) // d.shape[1])
    for s in range(0, d.shape[0], step):
        sums = np.asarray(onehot.T @ d[s : s + step].T.astype(np.float64)).T
        out[s : s + step] = (sums / counts[None, :])[:, code]
    return out


def multi_embedding_average(features: list[np.ndarray]) -> np.ndarray:
    """Mean of several L2-normalised embeddings of the same samples (several scales, flips or models),
    re-normalised: the "dual embedding expansion" of one sample into one vector.
    """
    if not isinstance(features, (list, tuple)) or not features:
        raise ValueError("features: expected a non-empty list of (n, d) arrays")
    arrs = [_features(f"features[{i}]", f) for i, f in enumerate(features)]
    for i, a in enumerate(arrs[1:], start=1):
        if a.shape != arrs[0].shape:
            raise ValueError(f"features[{i}]: shape {a.shape} differs from features[0] {arrs[0].shape}")
    acc = np.zeros(arrs[0].shape, dtype=np.float64)
    for a in arrs:
        acc += a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    acc /= np.maximum(np.linalg.norm(acc, axis=1, keepdims=True), 1e-12)
    return acc.astype(np.float32)
