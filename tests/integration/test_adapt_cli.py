"""`reidd adapt` as a command: its start-up errors (bad config, missing events or videos) in a subprocess.
(The pseudo-identity pieces are unit tests in tests/unit/train/test_adapt.py; the end-to-end run on a built
scene is in test_realistic_scene.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

from support import ROOT


def test_adapt_start_up_errors(tmp_path: Path) -> None:
    w = cv2.VideoWriter(str(tmp_path / "a.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
    for _ in range(3):
        w.write(np.zeros((48, 64, 3), np.uint8))
    w.release()
    (tmp_path / "b.mp4").write_bytes((tmp_path / "a.mp4").read_bytes())
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    base = {"cameras": [{"id": "c1", "url": "a.mp4"}, {"id": "c2", "url": "b.mp4"}],
            "detector": {"type": "motion"}}
    cases = [
        (base, ["--from", str(tmp_path / "m.onnx")], "ONNX export"),
        (base, ["--from", str(tmp_path / "missing.pt")], "missing.pt"),
        ({**base, "cameras": [{"id": "c1", "url": "a.mp4"}]}, [], "two enabled cameras"),
        ({**base, "cameras": [{"id": "c1", "url": "a.mp4"}, {"id": "c2", "url": "rtsp://127.0.0.1:9/x"}]}, [],
         "live streams"),
        (base, ["--rounds", "0"], "--rounds"),
        (base, [], "usable tracklets"),  # 3 black frames: nothing to learn from
    ]
    for i, (data, extra, expect) in enumerate(cases):
        cfg = tmp_path / f"c{i}.yaml"
        cfg.write_text(yaml.safe_dump(data))
        r = subprocess.run([sys.executable, "-m", "reidd", "adapt", "--config", str(cfg), "--out",
                            str(tmp_path / f"out{i}"), "--no-progress", *extra], capture_output=True, text=True,
                           cwd=ROOT, timeout=300)
        assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr, (expect, r.stderr[-1500:])
    (tmp_path / "mine" / "crops").mkdir(parents=True)
    (tmp_path / "mine" / "crops" / "keep.jpg").write_text("a user's file")
    r = subprocess.run([sys.executable, "-m", "reidd", "adapt", "--config", str(tmp_path / "c0.yaml"), "--out",
                        str(tmp_path / "mine"), "--no-progress"], capture_output=True, text=True, cwd=ROOT,
                       timeout=300)
    assert r.returncode == 2 and "not written by reidd adapt" in r.stderr, r.stderr[-1000:]
    assert (tmp_path / "mine" / "crops" / "keep.jpg").exists()
    (tmp_path / "file").write_text("x")
    r = subprocess.run([sys.executable, "-m", "reidd", "adapt", "--config", str(tmp_path / "c0.yaml"), "--out",
                        str(tmp_path / "file" / "sub")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "--out" in r.stderr
