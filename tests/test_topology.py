"""Learned camera topology (reidd/match/topology.py, `reidd topology`): links, windows, indirect paths, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import ROOT
from reidd.config import MatchingConfig
from reidd.match.recording import EmbeddingLog
from reidd.match.topology import TopologyError, learn_topology
from reidd.types import BoxRecord, Tracklet, TrackletEmbedding

DIM = 64


def _emb(cam: str, lid: int, t0: float, t1: float, vec: np.ndarray, cls: int = 2) -> TrackletEmbedding:
    boxes = [BoxRecord(int(t * 10) + 1, t, (100, 100, 160, 150), 0.9, cls) for t in np.linspace(t0, t1, 6)]
    e = vec / np.linalg.norm(vec)
    return TrackletEmbedding(Tracklet(cam, lid, 0, boxes, [], "lost", cls), e.astype(np.float32), 4, None)


def scene(seed: int = 0, n: int = 60, *, c3_share: float = 0.5, distractors: int = 15):
    """Vehicles go c1 -> c2 (5-9 s) and half of them on to c3 (3-6 s); one-camera distractors everywhere.
    Appearance: one random vector per vehicle plus per-sighting noise and a per-camera bias."""
    rng = np.random.default_rng(seed)
    bias = {c: rng.normal(0, 0.6, DIM) for c in ("c1", "c2", "c3")}
    items, truth = [], {"c1->c2": [], "c2->c3": []}
    lid = 0

    def sight(cam, t0, dur, ident):
        nonlocal lid
        lid += 1
        items.append(_emb(cam, lid, t0, t0 + dur, ident + bias[cam] + rng.normal(0, 0.45, DIM)))

    for _ in range(n):
        ident = rng.normal(0, 1, DIM)
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
            sight(cam, rng.uniform(0, 300), rng.uniform(2, 5), rng.normal(0, 1, DIM))
    return items, truth


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


def _video(path: Path) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(5):
        w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()


def test_cli_writes_a_pasteable_block_plots_and_errors(tmp_path: Path) -> None:
    items, truth = scene(3)
    log = EmbeddingLog(tmp_path / "embeddings.jsonl", DIM)
    for e in sorted(items, key=lambda e: e.tracklet.last_ts):
        log.query(e)
    log.close()
    cams = []
    for c in ("c1", "c2", "c3"):
        _video(tmp_path / f"{c}.mp4")
        cams.append({"id": c, "url": f"{c}.mp4"})
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": cams, "matching": {"window_s": 120}}))
    out = tmp_path / "learned" / "topology.yaml"
    cmd = [sys.executable, "-m", "reidd", "topology", "--config", str(cfg), "--embeddings",
           str(tmp_path / "embeddings.jsonl"), "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    block = yaml.safe_load(out.read_text())
    got = {(lk["src"], lk["dst"]) for lk in block["matching"]["topology"]}
    assert got == {("c1", "c2"), ("c2", "c3")}
    assert "c1 -> c2" in out.read_text().split("matching:")[0]  # the reasoning, as comments above the block
    # the block is valid config: pasted into the cameras.yaml it loads
    merged = yaml.safe_load(cfg.read_text())
    merged["matching"].update(block["matching"])
    cfg2 = tmp_path / "with-topology.yaml"
    cfg2.write_text(yaml.safe_dump(merged))
    ok = subprocess.run([sys.executable, "-m", "reidd", "check-config", str(cfg2)], capture_output=True, text=True,
                        cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    report = json.loads(out.with_suffix(".json").read_text())
    assert {p["src"] + p["dst"] for p in report["pairs"]} >= {"c1c2", "c2c3", "c1c3"}
    pngs = sorted(p.name for p in out.parent.glob("topology-*.png"))
    assert "topology-c1-c2.png" in pngs and "topology-c2-c3.png" in pngs
    assert cv2.imread(str(out.parent / "topology-c1-c2.png")) is not None
    # bad inputs: one line, exit 2, no traceback
    (tmp_path / "broken.jsonl").write_text('{"reidd_embeddings": 1, "dim": 64}\n{"q": {"cam": "c1"}}\n')
    for extra, expect in ((["--embeddings", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
                          (["--embeddings", str(tmp_path / "broken.jsonl")], "broken.jsonl:2"),
                          (["--embeddings", str(tmp_path / "embeddings.jsonl"), "--max-transit", "-1"], "--max-transit")):
        bad = [*cmd[:6], *extra, "--out", str(tmp_path / "x.yaml")]
        r = subprocess.run(bad, capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr, (extra, r.stderr[-1500:])
