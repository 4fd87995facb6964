"""`reidd topology` as a command: a pasteable topology block, plots and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

from reidd.match.recording import EmbeddingLog

from support import ROOT
from support.samples import CHAIN_DIM as DIM, chain_scene as scene


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
