"""Diffusion re-ranking on the gallery manifold (Iscen et al., "Efficient Diffusion on Region Manifolds",
CVPR 2017), truncated per query so that it scales to thousands of gallery items.

The gallery is a graph: each item is joined to the items that are among its ``k`` nearest neighbours *and*
have it among theirs (mutual kNN), with affinity ``max(cos, 0) ** gamma``. For a query, only its ``truncation``
most similar gallery items take part; on that sub-graph the affinity ``A`` is normalised symmetrically
(``S = D^-1/2 A D^-1/2``, ``D`` its row sums) and the ranking scores ``f`` solve

    (I - alpha * S) f = y,

``y`` holding ``max(cos, 0) ** gamma`` for the query's ``k`` nearest gallery items and 0 elsewhere. ``f`` is
the stationary state of a random walk that starts at the query's neighbours and spreads along the gallery's
manifold (``f = sum_t alpha^t S^t y``), so a gallery item far from the query but joined to its neighbours by a
chain of close items ranks high. ``I - alpha * S`` is symmetric positive definite for ``0 < alpha < 1``, and the
system is solved by conjugate gradient, every query of a chunk at once (one sparse block-diagonal product per
iteration, step sizes per query).

The queries are not part of the graph (gallery-side, "offline" diffusion): the gallery graph is built once,
in O(ng^2 d) chunked similarity products, and each query costs O(truncation * k * iterations).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reidd.evaluate.metrics import _features


@dataclass(frozen=True)
class DiffusionParams:
    """Parameters of :func:`diffusion_rerank` (``reidd eval --diffusion-*``); :meth:`check` validates them."""

    k: int = 10  #: mutual-kNN size of the gallery graph, and the query's seed neighbours
    alpha: float = 0.9  #: walk continuation (0 < alpha < 1): closer to 1 spreads further along the manifold
    gamma: float = 3.0  #: exponent on the cosine similarity of the affinities and seeds
    truncation: int = 1000  #: gallery items per query that take part (its most similar ones)
    iterations: int = 20  #: at most this many conjugate-gradient iterations
    tol: float = 1e-6  #: CG stops for a query once its residual norm is below tol * ||y||

    def check(self) -> DiffusionParams:
        for name in ("k", "truncation", "iterations"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected a positive integer, got {v!r}")
        a = _number("alpha", self.alpha)
        if not 0.0 < a < 1.0:
            raise ValueError(f"alpha: expected a number strictly between 0 and 1, got {self.alpha!r}")
        if _number("gamma", self.gamma) <= 0:
            raise ValueError(f"gamma: expected a number > 0, got {self.gamma!r}")
        if _number("tol", self.tol) < 0:
            raise ValueError(f"tol: expected a number >= 0, got {self.tol!r}")
        return self


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError(f"{name}: expected a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a number, got {v!r}") from None
    if not np.isfinite(x):
        raise ValueError(f"{name}: expected a finite number, got {v!r}")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def gallery_graph(g: np.ndarray, k: int, gamma: float, chunk: int = 1024) -> Any:
    """Mutual-kNN affinity of the (L2-normalised) gallery: a symmetric scipy CSR (ng, ng) matrix with
    ``max(cos, 0) ** gamma`` where i and j are among each other's ``k`` nearest other items, else 0 (no self
    loops)."""
    import scipy.sparse as sp

    ng = len(g)
    k = min(k, ng - 1)
    if k < 1:
        return sp.csr_matrix((ng, ng), dtype=np.float64)
    nbr = np.empty((ng, k), dtype=np.int64)
    val = np.empty((ng, k), dtype=np.float64)
    for s in range(0, ng, chunk):
        e = min(s + chunk, ng)
        sim = g[s:e] @ g.T
        sim[np.arange(e - s), np.arange(s, e)] = -np.inf  # never one's own neighbour
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        nbr[s:e] = part
        val[s:e] = np.take_along_axis(sim, part, axis=1)
    rows = np.repeat(np.arange(ng), k)
    knn = sp.csr_matrix((np.maximum(val.reshape(-1), 0.0) ** gamma, (rows, nbr.reshape(-1))), shape=(ng, ng))
    # mutual: keep (i, j) only when (j, i) is there too; the affinity is symmetric, so either value serves
    mask = sp.csr_matrix((np.ones(len(rows)), (rows, nbr.reshape(-1))), shape=(ng, ng))
    mutual = knn.multiply(mask.T).tocsr()
    mutual.eliminate_zeros()
    return mutual


def _subgraphs(w: Any, idx: np.ndarray, ng: int) -> Any:
    """Block-diagonal S (B*T, B*T) of the B queries' sub-graphs over their gallery items ``idx`` (B, T), each
    block the symmetric normalisation of ``w`` restricted to those items."""
    import scipy.sparse as sp

    b, t = idx.shape
    pos = np.full((b, ng), -1, dtype=np.int64)
    pos[np.arange(b)[:, None], idx] = np.arange(t)[None, :]
    sub = w[idx.reshape(-1)]  # the rows of every block's items, in block order
    counts = np.diff(sub.indptr)
    row = np.repeat(np.arange(b * t), counts)
    block = row // t
    local = pos[block, sub.indices]
    keep = local >= 0
    row, col, data = row[keep], block[keep] * t + local[keep], sub.data[keep]
    deg = np.bincount(row, weights=data, minlength=b * t)
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    return sp.csr_matrix((data * dinv[row] * dinv[col], (row, col)), shape=(b * t, b * t))


def _batched_cg(s: Any, y: np.ndarray, alpha: float, iterations: int, tol: float) -> np.ndarray:
    """Solve (I - alpha * S_b) f_b = y_b for every block b at once; ``y`` (B, T), S block-diagonal."""
    b, t = y.shape

    def matvec(v: np.ndarray) -> np.ndarray:
        return v - alpha * (s @ v.reshape(-1)).reshape(b, t)

    x = np.zeros_like(y)
    r = y.copy()
    p = r.copy()
    rs = (r * r).sum(axis=1)
    stop = (tol * np.sqrt(rs)) ** 2
    active = rs > stop
    for _ in range(iterations):
        if not active.any():
            break
        ap = matvec(p)
        pap = (p * ap).sum(axis=1)
        step = np.where(active & (pap > 0), rs / np.where(pap > 0, pap, 1.0), 0.0)
        x += step[:, None] * p
        r -= step[:, None] * ap
        rs_new = (r * r).sum(axis=1)
        active &= rs_new > stop
        beta = np.where(rs > 0, rs_new / np.where(rs > 0, rs, 1.0), 0.0)
        p = r + beta[:, None] * p
        rs = rs_new
    return x


def diffusion_scores(qf: Any, gf: Any, params: DiffusionParams | None = None, *,
                     chunk_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The diffusion of every query: ``(idx, f, sim)``.

    ``idx`` (nq, T) int64 are each query's T = min(truncation, ng) most similar gallery items (most similar
    first), ``f`` (nq, T) float64 their diffusion scores (>= 0; 0 for items no walk from the query's seeds
    reaches), ``sim`` (nq, ng) float32 the cosine similarities of queries and gallery.
    """
    p = (params or DiffusionParams()).check()
    q = _unit(_features("qf", qf))
    g = _unit(_features("gf", gf))
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"qf and gf: feature dims differ ({q.shape[1]} vs {g.shape[1]})")
    nq, ng = len(q), len(g)
    t = min(p.truncation, ng)
    kq = min(p.k, t)
    w = gallery_graph(g, p.k, float(p.gamma))
    sim = q @ g.T
    if t < ng:
        idx = np.argpartition(-sim, t - 1, axis=1)[:, :t]
    else:
        idx = np.broadcast_to(np.arange(ng), (nq, ng)).copy()
    order = np.argsort(-np.take_along_axis(sim, idx, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    f = np.empty((nq, t), dtype=np.float64)
    step = max(1, min(chunk_size, (1 << 23) // max(ng, 1)))
    for s in range(0, nq, step):
        e = min(s + step, nq)
        blk = idx[s:e]
        y = np.zeros((e - s, t), dtype=np.float64)
        y[:, :kq] = np.maximum(np.take_along_axis(sim[s:e], blk[:, :kq], axis=1), 0.0) ** float(p.gamma)
        f[s:e] = _batched_cg(_subgraphs(w, blk, ng), y, float(p.alpha), int(p.iterations), float(p.tol))
    return idx, np.maximum(f, 0.0), sim


def diffusion_rerank(qf: Any, gf: Any, params: DiffusionParams | None = None, *, chunk_size: int = 256) -> np.ndarray:
    """Diffusion re-ranking; returns an (nq, ng) float32 distance (smaller = closer), as the other re-rankings.

    Gallery items the query's diffusion reaches get ``1 - f / max(f)`` (in [0, 1), the best at 0); the rest
    (outside the query's truncation, or not joined to its seeds) get ``1 + (1 - cos)`` (in [1, 3]), so they
    follow in their plain cosine order. See :mod:`reidd.evaluate.diffusion` and :class:`DiffusionParams`.
    """
    idx, f, sim = diffusion_scores(qf, gf, params, chunk_size=chunk_size)
    out = (2.0 - sim).astype(np.float32)
    top = f.max(axis=1, keepdims=True)
    reached = f > 0
    d = np.where(reached, 1.0 - f / np.where(top > 0, top, 1.0), 0.0).astype(np.float32)
    rows = np.broadcast_to(np.arange(len(idx))[:, None], idx.shape)
    out[rows[reached], idx[reached]] = d[reached]
    return out
