"""reidd.evaluate.metrics: mAP, CMC and mINP against hand-computed cases and the reference protocol,
chunking, tracklet averaging, errors and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from reidd.evaluate.metrics import ReidResult, average_by_track, evaluate, evaluate_distmat, pairwise_distance
from reidd.evaluate.plots import plot_cmc, plot_distance_histogram, plot_training


# A tiny gallery shared by the hand-computed cases.
#            g0  g1  g2  g3  g4  g5
G_PIDS = [1, 2, 1, 3, 1, 2]


G_CAMS = [0, 1, 1, 2, 2, 0]


def test_same_camera_exclusion_hand_computed() -> None:
    # Query: pid 1, camera 0. Distances put the gallery in order g0 g1 g2 g3 g4 g5.
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]], np.float32)
    # With exclusion g0 (pid 1, camera 0) is dropped: g1- g2+ g3- g4+ g5-
    #   positives at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 0.5; first hit at rank 2; INP = 2/4.
    r = evaluate_distmat(d, [1], G_PIDS, [0], G_CAMS, max_rank=6)
    assert r.mAP == pytest.approx(0.5)
    assert r.mINP == pytest.approx(0.5)
    np.testing.assert_array_equal(r.cmc, [0, 1, 1, 1, 1, 1])
    # Without it g0 counts: g0+ g1- g2+ g3- g4+ g5-
    #   AP = (1/1 + 2/3 + 3/5) / 3 = 0.75556; Rank-1 hit; INP = 3/5.
    r = evaluate_distmat(d, [1], G_PIDS, [0], G_CAMS, max_rank=6, exclude_same_camera=False)
    assert r.mAP == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert r.mINP == pytest.approx(0.6)
    np.testing.assert_array_equal(r.cmc, [1, 1, 1, 1, 1, 1])


def test_ties_rank_by_gallery_order() -> None:
    # Query: pid 2, camera 1. g1, g2, g5 tie at 0.2; the gallery order decides: g1 g2 g5, then g0, g3, g4.
    # g1 (pid 2, camera 1) is dropped, so: g2- g5+ g0- g3- g4-  -> AP = 1/2, first hit at rank 2, INP = 1/2.
    # (Breaking the tie the other way would put g5 first and give AP = 1.)
    d = np.array([[0.5, 0.2, 0.2, 0.9, 0.9, 0.2]], np.float32)
    r = evaluate_distmat(d, [2], G_PIDS, [1], G_CAMS, max_rank=3)
    assert r.mAP == pytest.approx(0.5)
    assert r.mINP == pytest.approx(0.5)
    np.testing.assert_array_equal(r.cmc, [0, 1, 1])
    # Moving the positive ahead of the negative in the gallery arrays flips the tie: g5 now precedes g2.
    perm = [0, 1, 5, 3, 4, 2]
    r = evaluate_distmat(d[:, perm], [2], np.array(G_PIDS)[perm], [1], np.array(G_CAMS)[perm], max_rank=3)
    assert r.mAP == pytest.approx(1.0)
    np.testing.assert_array_equal(r.cmc, [1, 1, 1])


def test_invalid_query_reported_and_excluded_from_means() -> None:
    d = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # pid 1 camera 0: AP 0.5, INP 0.5, first hit rank 2 (above)
            [0.5, 0.2, 0.2, 0.9, 0.9, 0.2],  # pid 2 camera 1: AP 0.5, INP 0.5, first hit rank 2 (above)
            [0.1, 0.2, 0.3, 0.0, 0.5, 0.6],  # pid 3 camera 2: its only match g3 is on camera 2 -> invalid
            [0.9, 0.8, 0.1, 0.7, 0.6, 0.5],  # pid 1 camera 1: g2 dropped; g5- g4+ g3- g1- g0+ -> AP (1/2+2/5)/2
        ],
        np.float32,
    )
    r = evaluate_distmat(d, [1, 2, 3, 1], G_PIDS, [0, 1, 2, 1], G_CAMS, max_rank=5)
    assert r.invalid_queries == [2]
    assert (r.num_queries, r.num_valid) == (4, 3)
    # Means over the three valid queries only (counting the invalid one as 0 would give 3/4 of these).
    assert r.mAP == pytest.approx((0.5 + 0.5 + 0.45) / 3)
    assert r.mINP == pytest.approx((0.5 + 0.5 + 2 / 5) / 3)
    np.testing.assert_allclose(r.cmc, [0, 1, 1, 1, 1])
    summary = r.as_dict()
    assert summary["num_invalid"] == 1 and summary["num_valid"] == 3 and summary["rank1"] == 0.0
    assert summary["rank5"] == 1.0 and "rank10" not in summary  # beyond max_rank=5
    json.dumps(summary)
    with pytest.raises(ValueError, match="rank k must be in 1..5"):
        r.rank(6)


def test_query_sample_in_gallery_is_excluded() -> None:
    # Query: pid 1, camera 2, and it IS gallery item g4 (sample id "a"). Order: g4 g1 g2 g0 g3 g5.
    d = np.array([[0.3, 0.1, 0.2, 0.5, 0.0, 0.6]], np.float32)
    g_ids = ["x", "y", "z", "w", "a", "v"]
    # Same-camera exclusion off, so only the sample id removes g4: g1- g2+ g0+ g3- g5-
    #   AP = (1/2 + 2/3) / 2 = 0.58333, INP = 2/3, no Rank-1 hit.
    r = evaluate_distmat(d, [1], G_PIDS, [2], G_CAMS, max_rank=4, exclude_same_camera=False, q_ids=["a"], g_ids=g_ids)
    assert r.mAP == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r.mINP == pytest.approx(2 / 3)
    np.testing.assert_array_equal(r.cmc, [0, 1, 1, 1])
    # Without ids the query finds itself: g4+ g1- g2+ g0+ -> AP = (1 + 2/3 + 3/4) / 3, INP = 3/4.
    r = evaluate_distmat(d, [1], G_PIDS, [2], G_CAMS, max_rank=4, exclude_same_camera=False)
    assert r.mAP == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert r.mINP == pytest.approx(0.75)
    # A sample filed under another pid in the gallery is still dropped (it does not count as a negative).
    r = evaluate_distmat(d, [2], G_PIDS, [2], G_CAMS, max_rank=4, exclude_same_camera=False, q_ids=["a"], g_ids=g_ids)
    # g4 dropped: g1+ g2- g0- g3- g5+ -> AP = (1 + 2/5) / 2
    assert r.mAP == pytest.approx(0.7)


def test_evaluate_features_hand_computed() -> None:
    # 2-D features at angles 0, 10, 30, 60, 90 degrees from the query (cosine distance grows with the angle).
    ang = np.deg2rad([60, 10, 90, 30])
    gf = np.stack([np.cos(ang), np.sin(ang)], 1) * np.array([[3.0], [0.5], [2.0], [1.0]])  # norms do not matter
    qf = np.array([[2.0, 0.0]])
    # order: g1(10°)- g3(30°)+ g0(60°)- g2(90°)+  -> AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4
    r = evaluate(qf, gf, [7], [1, 1, 7, 7], [0], [1, 1, 1, 1], max_rank=4)
    assert r.mAP == pytest.approx(0.5)
    assert r.mINP == pytest.approx(0.5)
    np.testing.assert_array_equal(r.cmc, [0, 1, 1, 1])
    np.testing.assert_allclose(pairwise_distance(qf, gf)[0], 1 - np.cos(ang), atol=1e-6)
    np.testing.assert_allclose(pairwise_distance(qf, gf, "euclidean"), np.linalg.norm(qf[:, None] - gf[None], axis=2),
                               rtol=1e-5)


def _reference(d: np.ndarray, qp, gp, qc, gc, qi, gi, max_rank: int) -> tuple[float, float, np.ndarray, list[int]]:
    """Straightforward per-query protocol: stable argsort, drop, then the textbook formulas."""
    aps, inps, cmcs, invalid = [], [], [], []
    for i in range(len(d)):
        order = np.argsort(d[i], kind="stable")
        drop = ((gp[order] == qp[i]) & (gc[order] == qc[i])) | (gi[order] == qi[i])
        hits = (gp[order] == qp[i])[~drop]
        if not hits.any():
            invalid.append(i)
            continue
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
        cmcs.append((np.arange(1, max_rank + 1) >= ranks[0]).astype(float))
    return float(np.mean(aps)), float(np.mean(inps)), np.mean(cmcs, 0), invalid


def test_matches_reference_protocol_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    nq, ng = 90, 400
    gp, gc = rng.integers(0, 25, ng), rng.integers(0, 4, ng)
    qp, qc = rng.integers(0, 27, nq), rng.integers(0, 4, nq)  # pids 25, 26 never appear: invalid
    gi = rng.permutation(10_000)[:ng]
    qi = rng.integers(0, 10_000, nq)
    qi[:30] = gi[rng.integers(0, ng, 30)]  # some queries are gallery samples
    d = rng.integers(0, 12, (nq, ng)).astype(np.float32) / 4  # coarse values: ties everywhere
    d[rng.random((nq, ng)) < 0.5] += rng.random() * 0.01
    mAP, mINP, cmc, invalid = _reference(d, qp, gp, qc, gc, qi, gi, 20)
    for chunk in (1, 7, 1000):
        r = evaluate_distmat(d, qp, gp, qc, gc, max_rank=20, q_ids=qi, g_ids=gi, chunk_size=chunk)
        assert r.invalid_queries == invalid and len(invalid) > 0
        assert r.mAP == pytest.approx(mAP, abs=1e-12)
        assert r.mINP == pytest.approx(mINP, abs=1e-12)
        np.testing.assert_allclose(r.cmc, cmc, atol=1e-6)


def _clustered(seed: int, nid: int = 40, n: int = 600, d: int = 32) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(nid, d))
    pids = rng.integers(0, nid, n)
    feats = (centres[pids] + 1.2 * rng.normal(size=(n, d))).astype(np.float32)
    return feats, pids, rng.integers(0, 5, n)


def test_chunked_equals_unchunked_and_metrics_agree() -> None:
    f, p, c = _clustered(0)
    qf, gf, qp, gp, qc, gc = f[:150], f[150:], p[:150], p[150:], c[:150], c[150:]
    whole = evaluate(qf, gf, qp, gp, qc, gc, chunk_size=10_000)
    assert 0.05 < whole.mAP < 0.95 and whole.num_valid == 150  # a non-trivial ranking
    for chunk in (1, 13, 149):
        part = evaluate(qf, gf, qp, gp, qc, gc, chunk_size=chunk)
        assert part.mAP == pytest.approx(whole.mAP, abs=1e-12)
        assert part.mINP == pytest.approx(whole.mINP, abs=1e-12)
        np.testing.assert_array_equal(part.cmc, whole.cmc)
    # on L2-normalised features squared euclidean = 2 * cosine distance: the same ranking
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    eu = evaluate(qn, gn, qp, gp, qc, gc, metric="euclidean")
    assert eu.mAP == pytest.approx(whole.mAP, abs=1e-5)
    np.testing.assert_allclose(eu.cmc, whole.cmc, atol=1e-6)
    # and evaluate == evaluate_distmat(pairwise_distance)
    dm = evaluate_distmat(pairwise_distance(qf, gf), qp, gp, qc, gc)
    assert dm.mAP == pytest.approx(whole.mAP, abs=1e-9)


def test_average_by_track() -> None:
    f = np.array([[3, 0], [0, 1], [0, 2], [1, 1], [4, 0]], np.float32)
    tracks = np.array(["b", "a", "a", "c", "b"])
    pf, tid, pid, cam = average_by_track(f, tracks, [5, 6, 6, 7, 5], [0, 1, 1, 1, 0])
    assert tid.tolist() == ["b", "a", "c"]  # order of first appearance
    assert pid.tolist() == [5, 6, 7] and cam.tolist() == [0, 1, 1]
    np.testing.assert_allclose(pf, [[1, 0], [0, 1], [2**-0.5, 2**-0.5]], atol=1e-6)
    # normalised before averaging: a long vector does not dominate its track
    pf, *_ = average_by_track(np.array([[10, 0], [0, 1]], np.float32), [1, 1], [0, 0], [0, 0])
    np.testing.assert_allclose(pf, [[2**-0.5, 2**-0.5]], atol=1e-6)
    with pytest.raises(ValueError, match="pids: track 'a' mixes"):
        average_by_track(f, tracks, [5, 6, 9, 7, 5], [0, 1, 1, 1, 0])


def test_bad_input_is_named() -> None:
    d = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="g_pids: expected a 1-D array of length 3"):
        evaluate_distmat(d, [1, 2], [1, 2], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="q_ids and g_ids"):
        evaluate_distmat(d, [1, 2], [1, 2, 3], [0, 0], [1, 1, 1], q_ids=[1, 2])
    with pytest.raises(ValueError, match="no query has a valid positive"):
        evaluate_distmat(d, [8, 9], [1, 2, 3], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="metric"):
        evaluate(np.ones((2, 4)), np.ones((3, 4)), [1, 2], [1, 2, 3], [0, 0], [1, 1, 1], metric="manhattan")
    with pytest.raises(ValueError, match="feature dims differ"):
        evaluate(np.ones((2, 4)), np.ones((3, 5)), [1, 2], [1, 2, 3], [0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="qf: contains NaN"):
        evaluate(np.full((2, 4), np.nan), np.ones((3, 4)), [1, 2], [1, 2, 3], [0, 0], [1, 1, 1])
    assert isinstance(evaluate_distmat(d, [1, 2], [1, 2, 3], [0, 0], [1, 1, 1]), ReidResult)


def _png_ok(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plots_write_pngs(tmp_path: Path) -> None:
    cmc_a = np.minimum(1, 0.6 + 0.03 * np.arange(50))
    cmc_b = np.minimum(1, 0.4 + 0.05 * np.arange(50))
    _png_ok(plot_cmc({"resnet50": cmc_a, "osnet": cmc_b}, tmp_path / "out" / "cmc.png", title="VeRi-776"))

    log = tmp_path / "train.csv"
    rows = ["epoch,loss,loss_id,loss_triplet,mAP,rank1,lr"]
    for e in range(1, 13):
        evald = e % 4 == 0
        rows.append(f"{e},{3 / e},{2 / e},{1 / e},{0.05 * e if evald else ''},{0.07 * e if evald else ''},{3.5e-4 / e}")
    log.write_text("\n".join(rows) + "\n")
    _png_ok(plot_training(log, tmp_path / "train.png"))

    rng = np.random.default_rng(0)
    _png_ok(plot_distance_histogram(rng.normal(0.3, 0.1, 500), rng.normal(0.8, 0.1, 5000), tmp_path / "h.png", 0.55))

    (tmp_path / "bad.csv").write_text("epoch,loss\n1,abc\n")
    with pytest.raises(ValueError, match=r"bad.csv: line 2, column 'loss'"):
        plot_training(tmp_path / "bad.csv", tmp_path / "bad.png")
    with pytest.raises(ValueError, match="curves"):
        plot_cmc({}, tmp_path / "x.png")
