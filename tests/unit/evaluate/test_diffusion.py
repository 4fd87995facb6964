"""Diffusion re-ranking (reidd.evaluate.diffusion): the batched CG against a dense solve of the definitions written
out by hand, the manifold case it exists for, the distance convention and the parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch  # noqa: F401  (first imported at collection: its import probes ldconfig, a process)

from reidd.evaluate.diffusion import DiffusionParams, diffusion_rerank, diffusion_scores, gallery_graph
from reidd.evaluate.metrics import evaluate_distmat, pairwise_distance


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _dense_reference(qf: np.ndarray, gf: np.ndarray, k: int, alpha: float, gamma: float, t: int) -> list[dict]:
    """Per query: {gallery index: f} from the definitions, with Python sets and numpy.linalg.solve."""
    q, g = _unit(qf.astype(np.float64)), _unit(gf.astype(np.float64))
    ng = len(g)
    sim = g @ g.T
    np.fill_diagonal(sim, -np.inf)
    knn = [set(np.argsort(-sim[i], kind="stable")[:k].tolist()) for i in range(ng)]
    a = np.zeros((ng, ng))
    for i in range(ng):
        for j in knn[i]:
            if i in knn[j]:
                a[i, j] = max(sim[i, j], 0.0) ** gamma
    out = []
    for qi in range(len(q)):
        s_q = g @ q[qi]
        items = np.argsort(-s_q, kind="stable")[:t]
        sub = a[np.ix_(items, items)]
        deg = sub.sum(axis=1)
        dinv = np.array([1 / np.sqrt(x) if x > 0 else 0.0 for x in deg])
        s = dinv[:, None] * sub * dinv[None, :]
        y = np.zeros(t)
        y[:k] = np.maximum(s_q[items[:k]], 0.0) ** gamma
        f = np.linalg.solve(np.eye(t) - alpha * s, y)
        out.append(dict(zip(items.tolist(), f.tolist())))
    return out


@pytest.mark.parametrize("truncation", [40, 17])
def test_cg_matches_a_dense_solve(truncation: int, rng: np.random.Generator) -> None:
    centres = rng.normal(size=(6, 8))
    gf = centres[rng.integers(0, 6, 40)] + 0.6 * rng.normal(size=(40, 8))
    qf = centres[rng.integers(0, 6, 5)] + 0.6 * rng.normal(size=(5, 8))
    params = DiffusionParams(k=4, alpha=0.85, gamma=2.0, truncation=truncation, iterations=200, tol=1e-12)
    idx, f, sim = diffusion_scores(qf, gf, params)
    assert idx.shape == f.shape == (5, truncation) and sim.shape == (5, 40)
    ref = _dense_reference(qf, gf, 4, 0.85, 2.0, truncation)
    for qi in range(5):
        assert set(idx[qi].tolist()) == set(ref[qi])  # the same truncated item set, most similar first
        assert (np.diff(sim[qi, idx[qi]]) <= 1e-6).all()
        np.testing.assert_allclose(f[qi], [ref[qi][j] for j in idx[qi]], rtol=2e-6, atol=1e-9)  # float32 similarities
    assert (f > 0).sum() > 5 * 4  # the walk reached beyond the seeds


def test_few_cg_iterations_approach_the_solution(rng: np.random.Generator) -> None:
    gf = rng.normal(size=(60, 6))
    qf = rng.normal(size=(3, 6))
    exact = diffusion_scores(qf, gf, DiffusionParams(k=5, alpha=0.95, iterations=500, tol=0.0))[1]
    errs = [np.abs(diffusion_scores(qf, gf, DiffusionParams(k=5, alpha=0.95, iterations=n, tol=0.0))[1] - exact).max()
            for n in (1, 5, 30)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-3 * np.abs(exact).max()


def test_gallery_graph_is_symmetric_mutual_knn(rng: np.random.Generator) -> None:
    g = _unit(rng.normal(size=(30, 5))).astype(np.float32)
    w = gallery_graph(g, 3, 1.0).toarray()
    np.testing.assert_allclose(w, w.T)
    assert (np.diag(w) == 0).all() and ((w > 0).sum(axis=1) <= 3).all()
    i, j = np.nonzero(w)
    np.testing.assert_allclose(w[i, j], np.maximum((g[i] * g[j]).sum(1), 0), rtol=1e-5)


def _two_arcs(n: int = 30, step: float = 0.04, gap: float = 0.12) -> tuple[np.ndarray, ...]:
    """Two identities as parallel chains on the sphere: within a chain neighbours are ``step`` apart, the chains
    ``gap`` apart. The query sits at the start of chain 0: the far end of its own chain is much further in cosine
    than the other chain's near end, so the plain ranking interleaves the chains; the manifold does not."""
    ang = np.arange(n) * step
    chain0 = np.stack([np.cos(ang), np.sin(ang), np.zeros(n)], axis=1)
    chain1 = np.stack([np.cos(ang) * np.cos(gap), np.sin(ang) * np.cos(gap), np.full(n, np.sin(gap))], axis=1)
    gf = np.concatenate([chain0, chain1]).astype(np.float32)
    qf = np.array([[np.cos(-step), np.sin(-step), 0.0]], np.float32)
    return qf, gf, np.array([0]), np.repeat([0, 1], n), np.array([0]), np.ones(2 * n, int)


def test_diffusion_follows_the_manifold_where_the_plain_ranking_fails() -> None:
    qf, gf, qp, gp, qc, gc = _two_arcs()
    plain = evaluate_distmat(pairwise_distance(qf, gf), qp, gp, qc, gc, max_rank=10, progress=False).as_dict()
    dist = diffusion_rerank(qf, gf, DiffusionParams(k=3, alpha=0.99, gamma=1.0, iterations=100))
    diff = evaluate_distmat(dist, qp, gp, qc, gc, max_rank=10, progress=False).as_dict()
    assert plain["mAP"] < 0.7
    assert diff["mAP"] > 0.99 and diff["rank1"] == 1.0
    order = np.argsort(dist[0], kind="stable")
    assert set(order[:30].tolist()) == set(range(30))  # the whole of chain 0 before any of chain 1


def test_distance_convention_truncation_and_seeds(rng: np.random.Generator) -> None:
    gf = rng.normal(size=(50, 6)).astype(np.float32)
    qf = rng.normal(size=(4, 6)).astype(np.float32)
    params = DiffusionParams(k=5, alpha=1e-6, truncation=20)
    dist = diffusion_rerank(qf, gf, params)
    idx, f, sim = diffusion_scores(qf, gf, params)
    assert dist.shape == (4, 50) and dist.dtype == np.float32
    plain = pairwise_distance(qf, gf)
    for i in range(4):
        reached = np.zeros(50, bool)
        reached[idx[i][f[i] > 0]] = True
        assert dist[i].min() == 0.0 and (dist[i][reached] < 1).all()
        np.testing.assert_allclose(dist[i][~reached], 1.0 + plain[i][~reached], atol=1e-5)  # the rest in cosine order
        # a vanishing alpha keeps the query's own neighbours in their plain order, first
        np.testing.assert_array_equal(np.argsort(dist[i], kind="stable")[:5], np.argsort(plain[i], kind="stable")[:5])
        outside = np.setdiff1d(np.arange(50), idx[i])
        assert len(outside) == 30 and (dist[i][outside] >= 1).all()


def test_parameters_and_inputs_are_checked() -> None:
    g = np.eye(4, dtype=np.float32)
    for bad in (dict(alpha=0.0), dict(alpha=1.0), dict(alpha=float("nan")), dict(k=0), dict(truncation=True),
                dict(iterations=-1), dict(gamma=0.0), dict(gamma="x"), dict(tol=-1.0), dict(k=2.5)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DiffusionParams(**bad).check()
    with pytest.raises(ValueError, match="dims differ"):
        diffusion_rerank(np.ones((2, 3)), g)
    with pytest.raises(ValueError, match="NaN"):
        diffusion_rerank(np.full((1, 4), np.nan), g)
    with pytest.raises(ValueError, match="empty"):
        diffusion_rerank(np.zeros((0, 4)), g)
    one = diffusion_rerank(np.ones((1, 4), np.float32), g[:1])  # a gallery of one: no graph, still a ranking
    assert one.shape == (1, 1) and np.isfinite(one).all()
