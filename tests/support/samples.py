"""Synthetic inputs built in code: unit vectors near a given one, tracklets moving at a set speed, a
c1 -> c2 -> c3 chain of embedded sightings, and sample events."""

from __future__ import annotations

import numpy as np

from reidd.config import MatchingConfig, TopologyLink
from reidd.events.schema import match_event, tracklet_event
from reidd.types import BoxRecord, Tracklet, TrackletEmbedding


C1_C2 = [TopologyLink(src="c1", dst="c2", min_s=2, max_s=15, bidirectional=False)]


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def near(v: np.ndarray, rng: np.random.Generator, cos: float) -> np.ndarray:
    """A unit vector whose cosine with unit ``v`` is about ``cos``."""
    o = rng.normal(size=v.shape)
    o -= (o @ v) * v
    return unit(cos * v + np.sqrt(1 - cos**2) * unit(o))


def matching_config(**kw) -> MatchingConfig:
    return MatchingConfig(topology=C1_C2, **kw)


def moving_tracklet(cam: str, lid: int, t0: float, x0: float, vx: float, n: int = 20, fps: float = 10.0) -> Tracklet:
    boxes = [BoxRecord(int(t0 * fps) + k, t0 + k / fps, (x0 + vx * k / fps, 100.0, x0 + vx * k / fps + 60, 150.0),
                       0.9, 2) for k in range(n)]
    return Tracklet(cam, lid, 0, boxes, [], "lost", 2)


CHAIN_DIM = 64


def sighting(cam: str, lid: int, t0: float, t1: float, vec: np.ndarray, cls: int = 2) -> TrackletEmbedding:
    boxes = [BoxRecord(int(t * 10) + 1, t, (100, 100, 160, 150), 0.9, cls) for t in np.linspace(t0, t1, 6)]
    e = vec / np.linalg.norm(vec)
    return TrackletEmbedding(Tracklet(cam, lid, 0, boxes, [], "lost", cls), e.astype(np.float32), 4, None)


def chain_scene(seed: int = 0, n: int = 60, *, c3_share: float = 0.5, distractors: int = 15):
    """Vehicles go c1 -> c2 (5-9 s) and half of them on to c3 (3-6 s); one-camera distractors everywhere.
    Appearance: one random vector per vehicle plus per-sighting noise and a per-camera bias."""
    rng = np.random.default_rng(seed)
    bias = {c: rng.normal(0, 0.6, CHAIN_DIM) for c in ("c1", "c2", "c3")}
    items, truth = [], {"c1->c2": [], "c2->c3": []}
    lid = 0

    def sight(cam, t0, dur, ident):
        nonlocal lid
        lid += 1
        items.append(sighting(cam, lid, t0, t0 + dur, ident + bias[cam] + rng.normal(0, 0.45, CHAIN_DIM)))

    for _ in range(n):
        ident = rng.normal(0, 1, CHAIN_DIM)
        t = rng.uniform(0, 300)
        d1 = rng.uniform(2, 5)
        sight("c1", t, d1, ident)
        tr = rng.uniform(5, 9)
        t2 = t + d1 + tr
        d2 = rng.uniform(2, 5)
        sight("c2", t2, d2, ident)
        truth["c1->c2"].append(tr)
        if rng.random() < c3_share:
            tr3 = rng.uniform(3, 6)
            sight("c3", t2 + d2 + tr3, rng.uniform(2, 5), ident)
            truth["c2->c3"].append(tr3)
    for cam in ("c1", "c2", "c3"):
        for _ in range(distractors):
            sight(cam, rng.uniform(0, 300), rng.uniform(2, 5), rng.normal(0, 1, CHAIN_DIM))
    return items, truth


def tracklet_event_sample(i: int, daemon: str = "d1", cam: str = "c1"):
    return tracklet_event(
        camera_id=cam, local_id=i, tracklet_id=f"{cam}:{i}:0", global_id=100 + i, first_frame=10 * i,
        last_frame=10 * i + 9, first_ts=i * 0.4, last_ts=i * 0.4 + 0.36, live=False,
        box_summary={"first_xyxy": [1.0, 2.0, 30.0, 40.0], "mean_area": 812.5}, best_crop=None, cls=2,
        num_boxes=10, daemon_id=daemon,
    )


def match_event_sample(i: int):
    return match_event(
        query={"tracklet_id": f"c2:{i}:0", "camera_id": "c2", "first_ts": 10.0 + i, "last_ts": 12.5 + i},
        gallery={"tracklet_id": f"c1:{i}:0", "camera_id": "c1", "first_ts": 1.0 + i, "last_ts": 3.0 + i},
        similarity=0.8125, transit_s=7.0, global_id=100 + i, daemon_id="d1",
    )


def unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embed_with_checkpoint_and_onnx(model, path_stem, backbone: str, dim: int) -> list[np.ndarray]:
    """The daemon's embedder (reidd.reid.embedder.Embedder) on one small tracklet, once from ``model`` saved as a
    checkpoint (torch runtime, fp32) and once from its ONNX export: checks each reports ``backbone`` and ``dim``
    and returns both embeddings."""
    from reidd.config import ReidConfig
    from reidd.reid.checkpoint import save_checkpoint
    from reidd.reid.embedder import Embedder
    from reidd.reid.export import export_model
    from reidd.types import Crop

    ckpt = save_checkpoint(f"{path_stem}.pt", model)
    onnx = f"{path_stem}.onnx"
    export_model(model, onnx, "onnx")
    rng = np.random.default_rng(0)
    crops = [Crop(i, i / 10, (0, 0, 50, 40), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), quality=0.9)
             for i in range(3)]
    tl = Tracklet("c1", 1, 0, [BoxRecord(i, i / 10, (0, 0, 10, 10), 0.9, 2) for i in range(3)], crops, "lost", 2)
    outs = []
    for cfg in (ReidConfig(weights=str(ckpt), runtime="torch", precision="fp32"), ReidConfig(weights=str(onnx))):
        emb = Embedder(cfg)
        assert emb.spec.backbone == backbone and emb.dim == dim
        e = emb.embed_tracklets([tl])[0]
        assert e is not None and e.embedding.shape == (dim,)
        outs.append(e.embedding)
    return outs
