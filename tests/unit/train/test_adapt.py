"""`reidd adapt` pieces without the shared assets: pseudo-identities and their safeguards, the proxy dataset.
(The command's errors are in tests/integration/test_adapt_cli.py; the end-to-end run on a built scene is in
test_realistic_scene.py.)"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reidd.config import Config
from reidd.train.adapt import SiteTracklet, build_dataset, pseudo_identities
from reidd.types import BoxRecord, Tracklet, TrackletEmbedding


DIM = 48


def _emb(cam: str, lid: int, t0: float, vec: np.ndarray, dur: float = 3.0) -> TrackletEmbedding:
    boxes = [BoxRecord(int(t * 10) + 1, t, (10, 10, 60, 50), 0.9, 2) for t in np.linspace(t0, t0 + dur, 5)]
    return TrackletEmbedding(Tracklet(cam, lid, 0, boxes, [], "lost", 2), (vec / np.linalg.norm(vec)).astype(np.float32),
                             4, None)


def _cfg(**matching) -> Config:
    return Config.model_validate({
        "cameras": [{"id": "c1", "url": "a.mp4"}, {"id": "c2", "url": "b.mp4"}],
        "matching": {"topology": [{"src": "c1", "dst": "c2", "min_s": 2, "max_s": 10, "bidirectional": False}],
                     **matching},
    })


def _scene(seed: int = 0, n: int = 40):
    rng = np.random.default_rng(seed)
    items, truth = [], []
    for i in range(n):
        ident = rng.normal(0, 1, DIM)
        t = i * 1.0 + rng.uniform(0, 2)  # dense: most pairs in a transit window are strangers
        a = _emb("c1", i + 1, t, ident + rng.normal(0, 0.35, DIM))
        b = _emb("c2", i + 1, t + 3 + rng.uniform(3, 6), ident + rng.normal(0, 0.35, DIM))
        items += [a, b]
        truth.append((a.tracklet.tracklet_id, b.tracklet.tracklet_id))
    for j in range(10):  # one-camera vehicles
        items.append(_emb("c2", 100 + j, rng.uniform(0, 45), rng.normal(0, 1, DIM)))
    return items, truth


def test_confident_cross_view_pairs_join_identities() -> None:
    items, truth = _scene()
    labels, stats = pseudo_identities(items, _cfg(), confident=3.0, margin=0.3)
    joined = sum(labels[a] == labels[b] for a, b in truth)
    assert joined >= 0.8 * len(truth), stats
    # no wrong join: every identity holds at most one tracklet per camera, and only true partners share one
    partner = {a: b for a, b in truth} | {b: a for a, b in truth}
    for tid, lab in labels.items():
        same = [u for u, v in labels.items() if v == lab and u != tid]
        assert all(partner.get(tid) == u for u in same), (tid, same)
    assert stats["cross_view_pairs"] == joined and stats["pairs_per_camera_pair"] == {"c1->c2": joined}
    assert stats["identities"] == len(items) - joined


def test_outside_the_topology_nothing_joins() -> None:
    items, _ = _scene(1)
    cfg = _cfg(topology=[{"src": "c1", "dst": "c2", "min_s": 30, "max_s": 40, "bidirectional": False}])
    labels, stats = pseudo_identities(items, cfg, confident=3.0, margin=0.3)
    assert stats["cross_view_pairs"] == 0 and len(set(labels.values())) == len(items)


def test_join_that_would_put_two_tracklets_of_one_camera_together_is_refused() -> None:
    """Look-alikes: A (c1) pairs with X (c2), Y (c2) with Z (c3), and A with Z over the c1->c3 link. Taking all
    three would make X and Y, two c2 tracklets, one vehicle: the weakest join is refused."""
    rng = np.random.default_rng(3)
    ident = rng.normal(0, 1, DIM)
    look = lambda: ident + rng.normal(0, 0.05, DIM)  # noqa: E731
    items = [_emb("c1", 1, 0.0, look()), _emb("c2", 1, 8.0, look()), _emb("c2", 2, 30.0, look()),
             _emb("c3", 1, 38.0, look())]
    for cam, off in (("c1", 0.0), ("c2", 6.0), ("c3", 12.0)):
        items += [_emb(cam, 10 + i, 2.0 * i + off, rng.normal(0, 1, DIM)) for i in range(40)]
    cfg = Config.model_validate({
        "cameras": [{"id": c, "url": f"{c}.mp4"} for c in ("c1", "c2", "c3")],
        "matching": {"topology": [{"src": "c1", "dst": "c2", "min_s": 2, "max_s": 10, "bidirectional": False},
                                  {"src": "c2", "dst": "c3", "min_s": 2, "max_s": 10, "bidirectional": False},
                                  {"src": "c1", "dst": "c3", "min_s": 20, "max_s": 40, "bidirectional": False}]},
    })
    labels, stats = pseudo_identities(items, cfg, confident=2.0, margin=0.3)
    assert stats["refused_same_camera"] >= 1, stats
    for lab in set(labels.values()):
        cams = [t.split(":")[0] for t, v in labels.items() if v == lab]
        assert len(cams) == len(set(cams)), cams
    assert labels["c2:1:0"] != labels["c2:2:0"]
    assert labels["c1:1:0"] in (labels["c2:1:0"], labels["c3:1:0"])


def test_proxy_dataset_has_a_query_per_multi_camera_identity(tmp_path: Path) -> None:
    img = np.full((40, 60, 3), 100, np.uint8)
    sites, labels = [], {}
    for cam, lid, t0, lab in (("c1", 1, 0, 0), ("c2", 1, 9, 0), ("c2", 2, 3, 1), ("c1", 3, 20, 2)):
        paths = []
        for i in range(3):
            p = tmp_path / f"{cam}_{lid}_{i}.png"
            cv2.imwrite(str(p), img)
            paths.append((str(p), 0.5 + 0.1 * i))
        tl = Tracklet(cam, lid, 0, [BoxRecord(t0 * 10 + 1, float(t0), (0, 0, 5, 5), 0.9, 2)], [], "lost", 2)
        sites.append(SiteTracklet(tl, paths))
        labels[tl.tracklet_id] = lab
    ds = build_dataset(sites, labels, "toy")
    # training: only the identity seen by two cameras (an unmatched tracklet may be a missed sighting of it)
    assert sorted(Path(s.path).name for s in ds.train) == [f"{c}_1_{i}.png" for c in ("c1", "c2") for i in range(3)]
    assert {s.pid for s in ds.train} == {0}
    assert [(Path(s.path).name, s.pid) for s in ds.query] == [("c1_1_2.png", 0)]  # best crop of the earliest
    gallery = sorted((Path(s.path).name, s.pid) for s in ds.gallery)
    assert gallery[1] == ("c2_1_2.png", 0) and {n for n, _ in gallery} == {"c1_3_2.png", "c2_1_2.png", "c2_2_2.png"}
    assert len({p for _, p in gallery}) == 3  # the single-camera distractors have labels of their own
