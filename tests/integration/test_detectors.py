"""The YOLO detector on real traffic (needs ../shared/assets): tiled detection (detector.tiles) and the CPU
predictor without ultralytics' warm-up."""

from __future__ import annotations

import numpy as np
import pytest

from reidd.config import DetectorConfig
from reidd.detect.yolo import YoloDetector
from reidd.types import Frame

from support import ASSETS
from support.media import clip_frames


MODEL = ASSETS / "models" / "yolo11n_int8_openvino_model"
CLIP = ASSETS / "video" / "ua-detrac-intersection.mp4"


def _clip_frames(n: int, every: int = 1, cameras: int = 1) -> list[Frame]:
    return clip_frames(CLIP, n, every, cameras)


@pytest.mark.skipif(not MODEL.is_dir(), reason="needs ../shared/assets (the shipped INT8 detector)")
def test_tiled_detection_on_real_traffic() -> None:
    """On a real 960x540 clip: tiles give frame-coordinate boxes inside the frame, no duplicate pairs, and at
    least as many vehicles over a stretch of frames as the whole-frame pass."""
    frames = _clip_frames(60, every=10)
    whole = YoloDetector(DetectorConfig(model=str(MODEL), tiles=1))
    tiled = YoloDetector(DetectorConfig(model=str(MODEL), tiles="auto"))
    assert len(tiled.tiles_for(960, 540)) == 2
    n_whole = n_tiled = 0
    for d1, d2 in zip(whole.detect(frames), tiled.detect(frames)):
        n_whole += int(np.isin(d1.cls, [2, 5, 7]).sum())
        n_tiled += int(np.isin(d2.cls, [2, 5, 7]).sum())
        assert (d2.xyxy[:, :2] >= -1).all() and (d2.xyxy[:, 2] <= 961).all() and (d2.xyxy[:, 3] <= 541).all()
        b = d2.xyxy
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                if d2.cls[i] != d2.cls[j]:
                    continue
                ix = max(0, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
                iy = max(0, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
                small = min((b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]), (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]))
                assert ix * iy / small <= 0.8, "a duplicate survived the merge"
    assert n_tiled >= n_whole > 0, (n_tiled, n_whole)


_PREDICTOR_PROBE = r"""
import json, sys
import cv2
import numpy as np
from reidd.config import DetectorConfig
from reidd.detect import yolo
from reidd.types import Frame

cap = cv2.VideoCapture(sys.argv[2])
frames = []
for i in range(40):
    ok, img = cap.read()
    assert ok
    if i % 4 == 0:
        frames.append(Frame("c", i, i / 30, img))
cfg = DetectorConfig(model=sys.argv[1], max_batch=4)
ours = [d for d in yolo.YoloDetector(cfg).detect(frames)]
torchvision_after_ours = "torchvision" in sys.modules
yolo._predictor_without_warmup = lambda: None  # ultralytics' own predictor, warm-up and all
stock = [d for d in yolo.YoloDetector(cfg).detect(frames)]
rows = lambda d: sorted(np.column_stack([d.xyxy, d.conf, d.cls]).round(2).tolist())
print("PROBE " + json.dumps({"torchvision_after_ours": torchvision_after_ours,
                              "torchvision_after_stock": "torchvision" in sys.modules,
                              "ours": [rows(d) for d in ours], "stock": [rows(d) for d in stock]}))
"""


@pytest.mark.skipif(not MODEL.is_dir(), reason="needs ../shared/assets (the shipped INT8 detector)")
def test_cpu_predictor_skips_torchvision_and_keeps_the_boxes(tmp_path) -> None:
    """On CPU the detector runs without ultralytics' warm-up, whose only effect there is importing torchvision
    (torch._dynamo, triton: ~150 MB resident). Run in a fresh interpreter, since this one may have imported
    torchvision already: the boxes on real traffic are those of ultralytics' stock predictor (up to NMS
    tie-breaks), and torchvision is not loaded by ours but is by the stock one (so the check can fail)."""
    import json
    import subprocess
    import sys

    script = tmp_path / "probe.py"
    script.write_text(_PREDICTOR_PROBE)
    done = subprocess.run([sys.executable, str(script), str(MODEL),
                           str(CLIP)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    probe = json.loads(next(line[6:] for line in done.stdout.splitlines() if line.startswith("PROBE ")))
    assert not probe["torchvision_after_ours"]
    assert probe["torchvision_after_stock"]
    assert sum(len(r) for r in probe["ours"]) > 20
    assert len(probe["ours"]) == len(probe["stock"]) == 10
    exact = 0
    for ours, stock in zip(probe["ours"], probe["stock"]):
        assert len(ours) == len(stock)
        # the NMS implementations break ties between near-equal overlapping boxes their own way: each box has
        # its counterpart (same class and score, IoU >= 0.9), and nearly all are identical
        free = list(stock)
        for row in ours:
            best = max(free, key=lambda other: _iou(row, other) if other[5] == row[5] else -1.0)
            assert best[5] == row[5] and abs(best[4] - row[4]) <= 0.02 and _iou(row, best) >= 0.9, (row, best)
            exact += best == row
            free.remove(best)
    assert exact >= 0.95 * sum(len(r) for r in probe["ours"])


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


@pytest.mark.skipif(not MODEL.is_dir(), reason="needs ../shared/assets (the shipped INT8 detector)")
def test_fixed_batch_export_is_called_one_export_batch_at_a_time(tmp_path) -> None:
    """A batch-1 OpenVINO export gets one frame per predict call whatever detector.max_batch says (ultralytics
    would split the batch anyway, after pre-processing all of it at once), with the boxes of a max_batch 1
    detector; a PyTorch model keeps batching up to max_batch."""
    from ultralytics import YOLO

    frames = _clip_frames(6, cameras=3)
    batched = YoloDetector(DetectorConfig(model=str(MODEL), max_batch=6, tiles=1))
    calls: list[int] = []
    predict = batched._predict
    batched._predict = lambda images: calls.append(len(images)) or predict(images)
    got = batched.detect(frames)
    assert calls == [1] * 6
    single = YoloDetector(DetectorConfig(model=str(MODEL), max_batch=1, tiles=1)).detect(frames)
    for a, b in zip(got, single):
        assert np.array_equal(a.xyxy, b.xyxy) and np.array_equal(a.cls, b.cls)

    YOLO("yolo11n.yaml", task="detect").save(str(tmp_path / "net.pt"))
    torch_model = YoloDetector(DetectorConfig(model=str(tmp_path / "net.pt"), imgsz=160, max_batch=4, tiles=1))
    calls.clear()
    predict_pt = torch_model._predict
    torch_model._predict = lambda images: calls.append(len(images)) or predict_pt(images)
    torch_model.detect(frames)
    assert calls == [4, 2]
