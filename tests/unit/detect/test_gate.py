"""reidd.detect.gate.MotionGate (detector.gate): the whole frame periodically, nothing while nothing moves, and the
moving regions of several frames packed onto shared model inputs whose boxes go back to their frames. The model is
the real file detector (it serves the whole frames their listed boxes; canvases have no file, so no boxes)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reidd.config import DetectorConfig, MotionConfig
from reidd.detect.base import build_detector
from reidd.detect.file import FileDetector
from reidd.detect.gate import MotionGate, _Placement, merge_boxes
from reidd.types import Detections, Frame

from support import write_text as write


def _scene(n_still: int, n_moving: int) -> list[Frame]:
    rng = np.random.default_rng(0)
    road = rng.integers(0, 60, (180, 320, 3), dtype=np.uint8)
    car = rng.integers(150, 255, (40, 60, 3), dtype=np.uint8)
    frames = []
    for i in range(n_still + n_moving):
        img = road.copy()
        x = 10 + 6 * max(0, i - n_still)  # still until n_still, then moving right
        img[70:110, x:x + 60] = car
        frames.append(Frame("c1", i, i / 10, img))
    return frames


def _gate(tmp_path: Path, n: int, every: int = 5) -> MotionGate:
    # the file lists one box on every frame: what a model would find on the whole frame
    write(tmp_path / "c1.txt", "".join(f"{i + 1},-1,5,65,70,50,0.9,2\n" for i in range(n)))
    cfg = DetectorConfig(type="file", detections_dir=str(tmp_path), classes=[], gate=True, gate_every=every,
                         gate_width=160, motion=MotionConfig(history=50, min_area=200))
    return MotionGate(FileDetector(cfg, ["c1"]), cfg, ["c1"])


def test_whole_frames_come_periodically_and_still_frames_are_skipped(tmp_path: Path) -> None:
    frames = _scene(20, 20)
    gate = _gate(tmp_path, len(frames))
    paths, out = [], []
    for k in range(0, len(frames), 4):
        out += gate.detect(frames[k:k + 4])
        paths += [p for p, _ in gate.last]
    for i, (p, d) in enumerate(zip(paths, out)):
        if i % 5 == 0:
            assert p == "full", i
            assert len(d) == 1 and d.conf[0] == np.float32(0.9)  # the model's boxes, untouched
        elif i < 20:
            assert p == "skipped" and len(d) == 0, i  # nothing moves: no model call, no boxes
        else:
            assert p == "regions", i  # the car moves: only its region goes to the model
    s = gate.stats
    assert (s.frames, s.full, s.skipped, s.regions) == (40, 8, 16, 16)
    assert s.model_inputs < s.frames - 16  # the regions of several frames share a model input
    assert s.canvases <= 16 // 4 + 2


def test_regions_are_packed_at_the_models_scale_and_boxes_go_back_to_their_frame(tmp_path: Path) -> None:
    frames = _scene(0, 2)
    gate = _gate(tmp_path, 2)
    regions = [[(40, 50, 140, 130)], [(0, 0, 100, 60), (200, 100, 320, 180)]]
    canvases, placements = gate._pack(frames, list(enumerate(regions)))
    assert len(canvases) == 1 and len(placements[0]) == 3  # three regions of two frames on one model input
    cw, ch = gate.canvas_size()
    assert canvases[0].image.shape == (ch, cw, 3) == (640, 640, 3)
    sx, sy = gate.scale(320, 180)
    assert sx == sy == 2.0  # a YOLO-style model letterboxes 320 px wide to 640
    for p in placements[0]:
        (x0, y0, x1, y1), (ax0, ay0, ax1, ay1) = p.region, p.at
        assert (ax1 - ax0, ay1 - ay0) == (round((x1 - x0) * sx), round((y1 - y0) * sy))
        want = cv2.resize(frames[p.frame].image[y0:y1, x0:x1], (ax1 - ax0, ay1 - ay0), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(canvases[0].image[ay0:ay1, ax0:ax1], want)
    # a box in the middle of a placement comes back in frame pixels; one cut by an inner edge is dropped
    p = _Placement(0, (40, 50, 140, 130), (300, 20, 500, 180))
    d = Detections([[340, 60, 440, 140], [300, 60, 360, 100], [0, 0, 10, 10]], [0.8, 0.7, 0.9], [2, 2, 2])
    back = MotionGate._to_frame(d, p, frames[0])
    np.testing.assert_allclose(back.xyxy, [[60, 70, 110, 110]])
    assert back.conf.tolist() == [np.float32(0.8)]
    # at the frame's own border nothing is cut
    edge = MotionGate._to_frame(Detections([[0, 0, 100, 60]], [0.5], [2]),
                                _Placement(1, (0, 0, 100, 60), (0, 0, 200, 120)), frames[1])
    np.testing.assert_allclose(edge.xyxy, [[0, 0, 50, 30]])


def test_overlapping_regions_merge_into_one() -> None:
    assert merge_boxes([(0, 0, 10, 10), (50, 50, 60, 60), (8, 8, 20, 20), (19, 0, 30, 5)]) == [
        (0, 0, 30, 20), (50, 50, 60, 60)]
    assert merge_boxes([]) == []


def test_the_config_switches_the_gate_on(tmp_path: Path) -> None:
    write(tmp_path / "c1.txt", "1,-1,5,65,70,50,0.9,2\n")
    cfg = DetectorConfig(type="file", detections_dir=str(tmp_path))
    assert not DetectorConfig().gate and not isinstance(build_detector(cfg, ["c1"]), MotionGate)
    for bad in ({"gate_every": 0}, {"gate_max_cover": 0}, {"gate_width": 8}):
        try:
            DetectorConfig(**bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")
