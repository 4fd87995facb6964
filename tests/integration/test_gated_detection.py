"""detector.gate with the recommended CPU detector (OpenVINO crossroad-1016) on a real traffic clip: a still
stretch (the clip's first frame held, with sensor noise, as a fixed camera sees a moment where nothing moves)
costs the model one whole frame in gate_every, with the boxes it finds ungated; on the moving part the model sees
only moving regions, fewer inputs than frames, and still finds the vehicles it finds ungated inside them.
bench_streams.py takes an IR .xml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reidd.config import DetectorConfig
from reidd.detect.base import build_detector
from reidd.detect.gate import MotionGate
from reidd.types import Frame

from support import ASSETS, ROOT
from support.media import clip_frames

NAME = "person-vehicle-bike-detection-crossroad-1016"
XML = ASSETS / "models" / "omz" / NAME / "FP16-INT8" / f"{NAME}.xml"
CLIP = ASSETS / "video" / "ua-detrac-intersection.mp4"
needs_assets = pytest.mark.skipif(not XML.exists() or not CLIP.exists(), reason=f"needs ../shared/assets ({NAME})")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


@needs_assets
def test_gated_detection_on_a_real_clip_with_a_still_stretch() -> None:
    real = clip_frames(CLIP, 41, cameras=1)
    rng = np.random.default_rng(0)  # a still camera's picture still carries sensor noise
    still = [Frame("c", i, i / 10, np.clip(real[0].image + rng.normal(0, 2.5, real[0].image.shape), 0, 255)
                   .astype(np.uint8)) for i in range(20)]
    moving = [Frame("c", 20 + i, (20 + i) / 10, f.image) for i, f in enumerate(real[1:])]
    frames = still + moving
    ungated = build_detector(DetectorConfig(type="openvino", model=str(XML)), ["c"])
    gate = build_detector(DetectorConfig(type="openvino", model=str(XML), gate=True, gate_every=5), ["c"])
    assert isinstance(gate, MotionGate)
    ref, out, paths, regions = [], [], [], []
    for k in range(0, len(frames), 4):
        ref += ungated.detect(frames[k:k + 4])
        out += gate.detect(frames[k:k + 4])
        paths += [p for p, _ in gate.last]
        regions += [r for _, r in gate.last]
    # the periodic whole frame: every 5th frame of the camera, with exactly the ungated boxes
    for i in range(0, len(frames), 5):
        assert paths[i] == "full", i
        np.testing.assert_allclose(out[i].xyxy, ref[i].xyxy, atol=1e-3)
    # the still stretch: nothing moves, no model call between whole frames
    assert [paths[i] for i in range(20) if i % 5] == ["skipped"] * 16
    assert all(len(out[i]) == 0 for i in range(20) if i % 5)
    # the moving part: the model sees moving regions (packed), fewer model inputs than frames overall
    assert sum(p == "regions" for p in paths[20:]) >= 12
    s = gate.stats
    assert s.model_inputs <= 0.6 * s.frames, s
    # ... and finds the confident vehicles it finds ungated inside the moving regions
    found = total = 0
    for i in range(20, len(frames)):
        if paths[i] != "regions":
            continue
        r = ref[i][ref[i].conf >= 0.5]
        inside = np.array([any(x0 <= b[0] and y0 <= b[1] and b[2] <= x1 and b[3] <= y1 for x0, y0, x1, y1 in regions[i])
                           for b in r.xyxy], bool)
        r = r[inside]
        total += len(r)
        if len(r) and len(out[i]):
            found += int((_iou(r.xyxy, out[i].xyxy) >= 0.5).any(axis=1).sum())
    assert total >= 20, total
    assert found >= 0.8 * total, f"{found} of {total} moving vehicles found"
    print(f"gate: {s}; moving vehicles found {found} of {total}")


@needs_assets
def test_bench_streams_takes_an_openvino_ir() -> None:
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_CONFIG_DIR=str(ROOT / ".yolo"))
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_streams.py"), "--device", "cpu", "--model",
                           str(XML), "--cameras", "1", "--seconds", "1", "--no-reid", "--detector", "gate=true",
                           "--detector", "gate_every=3"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["detector_type"] == "openvino" and result["model"] == XML.name
    assert result["detector_options"] == {"gate": True, "gate_every": 3}
    row = result["rows"][0]
    assert row["cameras"] == 1 and row["fps"] > 0 and row["stage_ms_per_frame"]["detect"] > 0
    assert "(openvino, gate=True, gate_every=3)" in proc.stdout


@pytest.mark.parametrize(("option", "expect"), [
    ("gate=maybe", "--detector gate: Input should be a valid boolean"),
    ("gates=true", "--detector gates: Extra inputs are not permitted"),
    ("gate_every=0", "--detector gate_every: Input should be greater than or equal to 1"),
    ("gate", "--detector: expected key=value, got 'gate'"),
    ("gate=[", "--detector gate: not a YAML value"),
])
def test_bench_streams_refuses_a_bad_detector_option_before_any_run(tmp_path: Path, option: str, expect: str) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not decoded: refused before")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_streams.py"), "--device", "cpu", "--video",
                           str(video), "--detector", option], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and expect in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "making a" not in proc.stdout
