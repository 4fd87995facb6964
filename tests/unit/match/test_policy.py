"""reidd.match.policy, the pure association rules: links and their explanations, topology windows, rival
claimants, waits, camera bias, class and colour evidence, fragment continuation, learned transit times."""

from __future__ import annotations

import numpy as np
import pytest

from reidd.config import MatchingConfig
from reidd.match.policy import AssociationPolicy, Candidate, Query

from support.samples import matching_config as cfg, moving_tracklet as _tracklet, near, unit


DIM = 64


def query(qid: str, emb: np.ndarray, first_ts: float = 20.0, cam: str = "c2", **kw) -> Query:
    return Query(qid, cam, first_ts, first_ts + 4.0, emb, **kw)


def cand(eid: str, emb: np.ndarray, gid: int, last_ts: float = 14.0, cam: str = "c1", **kw) -> Candidate:
    return Candidate(eid, cam, gid, last_ts - 4.0, last_ts, emb, **kw)


def test_clear_match_is_linked_and_explained(rng) -> None:
    p = AssociationPolicy(cfg())
    q = unit(rng.normal(size=DIM))
    cands = [cand("c1:1:0", near(q, rng, 0.9), 1)] + [cand(f"c1:{i}:0", unit(rng.normal(size=DIM)), i)
                                                        for i in range(2, 8)]
    scored = p.score(query("c2:1:0", q), cands)
    assert [s.entry_id for s in scored][0] == "c1:1:0" and len(scored) == 7
    assert scored == sorted(scored, key=lambda s: -s.score)
    (d,) = p.assign([query("c2:1:0", q)], [scored], [True])
    assert d.chosen is not None and d.chosen.entry_id == "c1:1:0" and d.chosen.global_id == 1
    assert d.reason.startswith("best of 7")
    ex = d.chosen.explain()
    assert set(ex) >= {"entry", "gid", "transit_s", "cosine", "z", "score"} and ex["transit_s"] == 6.0


def test_outside_the_topology_window_is_no_candidate(rng) -> None:
    p = AssociationPolicy(cfg())
    q = unit(rng.normal(size=DIM))
    too_early = cand("c1:1:0", q, 1, last_ts=1.0)  # transit 19 s > 15 s
    wrong_way = cand("c3:1:0", q, 2, cam="c3")  # no c3 -> c2 link
    assert p.score(query("c2:1:0", q), [too_early, wrong_way]) == []
    (d,) = p.assign([query("c2:1:0", q)], [[]], [True])
    assert d.chosen is None and "no candidate" in d.reason


def test_two_close_candidates_of_different_vehicles_give_no_link(rng) -> None:
    p = AssociationPolicy(cfg())
    q = unit(rng.normal(size=DIM))
    a, b = near(q, rng, 0.9), near(q, rng, 0.9)
    scored = p.score(query("c2:1:0", q), [cand("c1:1:0", a, 1), cand("c1:2:0", b, 2)])
    assert abs(scored[0].score - scored[1].score) < p.cfg.margin
    (d,) = p.assign([query("c2:1:0", q)], [scored], [True])
    assert d.chosen is None and d.reason.startswith("ambiguous")
    # the same two entries carrying one global id are one vehicle: nothing to be unsure about
    scored = p.score(query("c2:1:0", q), [cand("c1:1:0", a, 5), cand("c1:2:0", b, 5)])
    (d,) = p.assign([query("c2:1:0", q)], [scored], [True])
    assert d.chosen is not None and d.chosen.global_id == 5


def test_one_entry_goes_to_its_best_claimant_only(rng) -> None:
    p = AssociationPolicy(cfg())
    e = unit(rng.normal(size=DIM))
    q1, q2 = near(e, rng, 0.95), near(e, rng, 0.6)
    entry = [cand("c1:1:0", e, 1)]
    qs = [query("c2:1:0", q1), query("c2:2:0", q2, first_ts=21.0)]
    scored = [p.score(q, entry) for q in qs]
    d1, d2 = p.assign(qs, scored, [True, True])
    assert d1.chosen is not None and d1.chosen.entry_id == "c1:1:0"
    assert d2.chosen is None
    # an entry already claimed by a query of this camera is not claimed again
    (d,) = p.assign(qs[:1], scored[:1], [True], blocked={("c1:1:0", "c2")})
    assert d.chosen is None


def test_two_claimants_too_close_leave_the_entry_unlinked(rng) -> None:
    p = AssociationPolicy(cfg())
    e = unit(rng.normal(size=DIM))
    qs = [query("c2:1:0", near(e, rng, 0.9)), query("c2:2:0", near(e, rng, 0.9), first_ts=21.0)]
    scored = [p.score(q, [cand("c1:1:0", e, 1)]) for q in qs]
    assert abs(scored[0][0].score - scored[1][0].score) < p.cfg.margin
    decisions = p.assign(qs, scored, [True, True])
    assert all(d.chosen is None for d in decisions)
    assert any("another query for the same entry" in d.reason for d in decisions)


def test_a_waiting_rival_takes_part_but_is_not_decided(rng) -> None:
    """The weaker query is ready first; its stronger rival for the same entry is still waiting: the ready
    one must not grab the entry, and no decision is returned for the waiting one."""
    p = AssociationPolicy(cfg())
    e = unit(rng.normal(size=DIM))
    weak, strong = query("c2:1:0", near(e, rng, 0.6)), query("c2:2:0", near(e, rng, 0.95), first_ts=23.0)
    scored = [p.score(q, [cand("c1:1:0", e, 1)]) for q in (weak, strong)]
    decisions = p.assign([weak, strong], scored, [True, False])
    assert [d.query_id for d in decisions] == ["c2:1:0"] and decisions[0].chosen is None
    # alone, the weak one would have been linked: waiting is what prevented the wrong link
    (alone,) = p.assign([weak], scored[:1], [True])
    assert alone.chosen is not None


def test_wait_follows_the_topology() -> None:
    assert AssociationPolicy(cfg(early=False)).wait_s() == 13.0  # the widest window: every rival seen
    assert AssociationPolicy(cfg()).wait_s() == 6.5  # early decisions wait for rivals themselves; at most half
    assert AssociationPolicy(cfg(wait_s=4.0)).wait_s() == 4.0
    assert AssociationPolicy(MatchingConfig()).wait_s() == MatchingConfig().decision_window_s


def _scene(rng: np.random.Generator, bias: np.ndarray | None, spread: float):
    """Sixty c1 -> c2 transits with strangers in the window, embedded by one 'model'. ``bias`` is a
    component every vehicle of a camera shares (background), ``spread`` how tightly a model's views agree."""
    ids = [unit(rng.normal(size=DIM)) for _ in range(60)]
    views = {}
    for cam in ("c1", "c2"):
        for i, v in enumerate(ids):
            e = near(v, rng, spread)
            views[cam, i] = unit(e + bias[cam]) if bias is not None else e
    return views


def _decide_scene(p: AssociationPolicy, views) -> list[int | None]:
    out = []
    for i in range(60):  # the matcher observes every tracklet as it closes
        p.observe("c1", views["c1", i])
    for i in range(60):
        p.observe("c2", views["c2", i])
        q = query(f"c2:{i}:0", views["c2", i], first_ts=100.0 + i)
        # the true entry and six strangers, all in the window
        cands = [cand(f"c1:{j}:0", views["c1", j], j, last_ts=95.0 + i) for j in {i, *(range(i + 1, i + 7))} if j < 60]
        sc = p.score(q, cands, record=True)
        (d,) = p.assign([q], [sc], [True])
        out.append(None if d.chosen is None else d.chosen.global_id)
    return out


def test_camera_bias_and_calibration_make_one_setting_fit_different_models() -> None:
    """A model whose cosines all sit high (a strong per-camera component) and one whose cosines are spread:
    the default setting links the true pairs for both, and almost never a stranger."""
    for bias_scale in (0.0, 1.5):
        rng = np.random.default_rng(3)
        shared = unit(rng.normal(size=DIM))
        bias = {c: bias_scale * unit(shared + 0.5 * unit(rng.normal(size=DIM))) for c in ("c1", "c2")}
        views = _scene(rng, bias, spread=0.8)
        raw = float(np.mean([views["c1", i] @ views["c2", i + 1] for i in range(59)]))
        p = AssociationPolicy(cfg())
        got = _decide_scene(p, views)
        right = sum(g == i for i, g in enumerate(got))
        wrong = sum(g is not None and g != i for i, g in enumerate(got))
        assert right >= 50 and wrong <= 1, (bias_scale, raw, right, wrong)
        if bias_scale:
            assert raw > 0.5  # strangers look alike in raw cosine: a fixed cosine threshold would merge them
    # without bias removal the high-cosine model merges strangers or links nothing useful
    rng = np.random.default_rng(3)
    shared = unit(rng.normal(size=DIM))
    bias = {c: 1.5 * unit(shared + 0.5 * unit(rng.normal(size=DIM))) for c in ("c1", "c2")}
    views = _scene(rng, bias, spread=0.8)
    got = _decide_scene(AssociationPolicy(cfg(camera_bias=False, transit_weight=0.0)), views)  # appearance alone
    assert sum(g == i for i, g in enumerate(got)) < 50


def test_class_evidence_is_soft_and_needs_clear_votes(rng) -> None:
    p = AssociationPolicy(cfg(class_penalty=2.0))
    q = unit(rng.normal(size=DIM))
    e = near(q, rng, 0.9)

    def term(qc, qs, ec, es):
        (s,) = p.score(query("c2:1:0", q, cls=qc, cls_share=qs), [cand("c1:1:0", e, 1, cls=ec, cls_share=es)])
        return s.class_term

    assert term(2, 1.0, 2, 1.0) == 0.0
    assert term(7, 1.0, 5, 1.0) == 0.0  # bus and truck: COCO mixes them up
    assert term(2, 1.0, 7, 0.9) == -2.0
    assert term(3, 1.0, 2, 1.0) == -4.0  # motorcycle vs car
    assert term(3, 0.5, 2, 1.0) == 0.0  # unclear votes: no evidence
    assert term(None, 0.0, 2, 1.0) == 0.0


def test_colour_evidence_moves_the_score(rng) -> None:
    p = AssociationPolicy(cfg(colour_weight=4.0, colour_ref=0.6))
    q = unit(rng.normal(size=DIM))
    red, blue = np.zeros(40, np.float32), np.zeros(40, np.float32)
    red[0], blue[20] = 1.0, 1.0
    e = near(q, rng, 0.8)
    same = p.score(query("c2:1:0", q, colour=red), [cand("c1:1:0", e, 1, colour=red)])[0]
    diff = p.score(query("c2:1:0", q, colour=red), [cand("c1:1:0", e, 1, colour=blue)])[0]
    assert same.colour == pytest.approx(1.0) and diff.colour == pytest.approx(0.0)
    assert same.score - diff.score == pytest.approx(4.0, abs=1e-5)


def test_fragment_continuation_needs_time_place_and_looks(rng) -> None:
    p = AssociationPolicy(cfg())
    v = unit(rng.normal(size=DIM))
    prev = _tracklet("c2", 1, 10.0, 100.0, 100.0)  # ends at t=11.9 around x=290..350, moving right at 100 px/s
    ok = _tracklet("c2", 2, 12.9, 390.0, 100.0)  # one second later, 100 px further: where it was heading
    assert p.continues(prev, v, ok, near(v, rng, 0.9)) is not None
    assert p.continues(prev, v, ok, near(v, rng, 0.0)) is None  # another vehicle
    assert p.continues(prev, v, _tracklet("c2", 3, 12.9, 800.0, 100.0), v) is None  # somewhere else
    assert p.continues(prev, v, _tracklet("c2", 4, 16.0, 700.0, 100.0), v) is None  # too late (gap 4.1 s)
    assert p.continues(prev, v, _tracklet("c1", 5, 12.9, 390.0, 100.0), v) is None  # another camera
    assert p.continues(prev, v, _tracklet("c2", 6, 5.0, 390.0, 100.0), v) is None  # started before prev ended
    # starts in prev's last frame (gap 0 s): both tracks are in that frame, so two vehicles (the demo once
    # gave both one global id and wrote the id twice in one frame of its MTMC file)
    same_frame = _tracklet("c2", 7, 11.9, 300.0, 100.0)
    assert same_frame.first_frame == prev.last_frame
    assert p.continues(prev, v, same_frame, v) is None
    assert p.continues(prev, v, _tracklet("c2", 8, 12.0, 310.0, 100.0), v) is not None  # the next frame: may be


def test_transit_time_is_learned_from_accepted_links(rng) -> None:
    """Links accepted at about 6 s make a 6 s candidate more likely and a 14 s one less, within the same window;
    nothing changes before any link is accepted, nor with transit_weight 0."""
    p = AssociationPolicy(cfg(transit_weight=0.5))
    q = unit(rng.normal(size=DIM))
    same = near(q, rng, 0.8)
    at6, at14 = cand("c1:1:0", same, 1, last_ts=14.0), cand("c1:2:0", same, 2, last_ts=6.0)  # transit 6 s / 14 s
    before = {s.entry_id: s for s in p.score(query("c2:9:0", q), [at6, at14])}
    assert before["c1:1:0"].transit_term == before["c1:2:0"].transit_term == 0.0
    for k in range(40):  # accepted links c1 -> c2 at 5.5-6.5 s
        v = unit(rng.normal(size=DIM))
        qk = query(f"c2:{k}:1", v, first_ts=100.0 + k * 20)
        ck = cand(f"c1:{k}:1", near(v, rng, 0.95), 100 + k, last_ts=100.0 + k * 20 - 5.5 - (k % 3) * 0.5)
        (d,) = p.assign([qk], [p.score(qk, [ck])], [True])
        assert d.chosen is not None
    after = {s.entry_id: s for s in p.score(query("c2:9:0", q), [at6, at14])}
    assert after["c1:1:0"].transit_term > 0.3 and after["c1:2:0"].transit_term < -0.3
    assert after["c1:1:0"].score > after["c1:2:0"].score
    assert after["c1:1:0"].explain()["transit"] == round(after["c1:1:0"].transit_term, 3)
    off = AssociationPolicy(cfg(transit_weight=0.0))
    off._transits = p._transits
    assert all(s.transit_term == 0.0 for s in off.score(query("c2:9:0", q), [at6, at14]))


def test_max_assignment_is_optimal_and_respects_forbidden_pairs() -> None:
    """Against brute force on small rectangular matrices with forbidden pairs: as many rows assigned as can be,
    and among those the highest total; never a forbidden pair, never a column twice."""
    import itertools

    from reidd.match.policy import max_assignment

    rng = np.random.default_rng(3)
    for _ in range(300):
        n, m = rng.integers(1, 5, 2)
        score = rng.normal(size=(n, m))
        score[rng.random((n, m)) < 0.3] = -np.inf
        got = max_assignment(score)
        assert len(set(got.values())) == len(got)
        assert all(np.isfinite(score[r, c]) for r, c in got.items())
        best = (0, 0.0)
        for cols in itertools.product(range(-1, m), repeat=n):
            used = [c for c in cols if c >= 0]
            if len(used) != len(set(used)) or any(c >= 0 and not np.isfinite(score[r, c]) for r, c in enumerate(cols)):
                continue
            value = (len(used), sum(score[r, c] for r, c in enumerate(cols) if c >= 0))
            best = max(best, value)
        assert len(got) == best[0]
        assert np.isclose(sum(score[r, c] for r, c in got.items()), best[1])
    assert max_assignment(np.full((2, 3), -np.inf)) == {}
