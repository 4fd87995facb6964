"""``scripts/bench_gallery.py --data realistic``: vectors built from recorded tracklet embeddings, calibrated to the
asked view cosine and the real stranger cosines, measured end to end (table and JSON); a bad --real file is one
error line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from reidd.match.recording import EmbeddingLog
from reidd.types import BoxRecord, Tracklet, TrackletEmbedding

from support import ROOT

DIM = 48


def _recording(path: Path, n: int = 120) -> None:
    """Tracklet embeddings with a common component and a few appearance groups, as a replay writes them."""
    rng = np.random.default_rng(0)
    common, groups = rng.normal(size=DIM), rng.normal(size=(6, DIM))
    log = EmbeddingLog(path, DIM)
    for i in range(n):
        v = 1.2 * common + groups[i % 6] + 0.8 * rng.normal(size=DIM)
        boxes = [BoxRecord(i, float(i), (10.0, 20.0, 70.0, 60.0), 0.8, 2)]
        log.query(TrackletEmbedding(Tracklet("c1", i + 1, 0, boxes, [], "lost", 2), (v / np.linalg.norm(v)).astype(
            np.float32), 1))
    log.close()


def test_realistic_data_is_calibrated_and_benchmarked(tmp_path: Path) -> None:
    rec = tmp_path / "embeddings.jsonl"
    _recording(rec)
    r = subprocess.run([sys.executable, "scripts/bench_gallery.py", "--data", "realistic", "--real", str(rec),
                        "--sizes", "3000", "--queries", "50", "--exact-timed", "20", "--view-cos", "0.8", "--no-swap"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    got = out["realistic"]
    assert out["dim"] == DIM and out["data"] == "realistic"
    assert abs(got["view_cos"] - 0.8) < 0.05, got
    assert abs(got["stranger_cos"] - got["real_stranger_cos"]) < 0.05, got
    assert got["view_cos"] > got["stranger_cos"] + 0.1  # views of one vehicle are closer than two vehicles
    (row,) = out["results"]
    assert row["size"] == 3000 and row["recall_at_k"] == 1.0  # exact search against itself
    assert "generated: mixtures of" in r.stderr and "real: 120 tracklet embeddings" in r.stderr
    # hostile or missing input: one line naming the problem, exit 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"reidd_embeddings": 1, "dim": 4}\n{"q": {"cam": "c1"}}\n')
    for extra, expect in ((["--real", str(bad)], f"{bad}:2:"), ([], "needs --real")):
        r = subprocess.run([sys.executable, "scripts/bench_gallery.py", "--data", "realistic", "--sizes", "100",
                            *extra], capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr
