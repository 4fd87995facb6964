"""reidd.match.topology: learning links and transit windows from events, and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from reidd.config import MatchingConfig
from reidd.match.topology import TopologyError, learn_topology

from support.samples import CHAIN_DIM as DIM, chain_scene as scene, sighting as _emb


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learns_the_chain_and_its_windows(seed: int) -> None:
    items, truth = scene(seed)
    est = learn_topology(items, MatchingConfig(), use_class=False, max_transit=120)
    links = {(lk["src"], lk["dst"]): lk for lk in est.links()}
    assert set(links) == {("c1", "c2"), ("c2", "c3")}, [p.summary() for p in est.pairs]
    for (a, b), lk in links.items():
        assert not lk["bidirectional"]
        true = truth[f"{a}->{b}"]
        # the window holds (almost) every true transit, and is not the whole search range
        inside = np.mean([lk["min_s"] <= t <= lk["max_s"] for t in true])
        assert inside >= 0.95, (lk, min(true), max(true))
        assert lk["max_s"] - lk["min_s"] < 20
    pairs = {(p.src, p.dst): p for p in est.pairs}
    # vehicles seen in c1 and later in c3 are explained by the path through c2
    c13 = pairs[("c1", "c3")]
    assert not c13.kept and (c13.indirect_via == "c2" or "chance" in c13.reason or "few" in c13.reason), c13.summary()
    assert not pairs[("c2", "c1")].kept and not pairs[("c3", "c2")].kept


def test_strangers_only_give_no_link() -> None:
    rng = np.random.default_rng(5)
    items = [_emb(c, i, t, t + 3, rng.normal(0, 1, DIM)) for i, (c, t) in
             enumerate((c, rng.uniform(0, 300)) for c in ("c1", "c2") for _ in range(60))]
    est = learn_topology(items, MatchingConfig(), use_class=False, max_transit=120)
    assert est.links() == [], [p.summary() for p in est.pairs]


def test_one_camera_is_an_error() -> None:
    items, _ = scene(0, n=5, distractors=0)
    with pytest.raises(TopologyError, match="two"):
        learn_topology([e for e in items if e.tracklet.camera_id == "c1"], MatchingConfig())
