"""reidd.detect.motion.MotionAssisted (detector.motion_assist): moving blobs the model's boxes do not explain are
added at motion_assist_conf; blobs a model box explains are not doubled. The model here is the real file detector
serving boxes for the first frames only (as a model that loses a vehicle would)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reidd.config import DetectorConfig, MotionConfig, TrackletConfig
from reidd.detect.file import FileDetector
from reidd.detect.motion import MotionAssisted
from reidd.track.tracklets import TrackletBuilder
from reidd.types import MOTION_ONLY, Detections, Frame

from support import write_text as write


def test_unexplained_moving_blobs_fill_the_model_gaps(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    road = rng.integers(0, 60, (120, 200, 3), dtype=np.uint8)
    car = rng.integers(150, 255, (40, 40, 3), dtype=np.uint8)
    frames = []
    lines = []
    for i in range(30):
        img = road.copy()
        x = 10 + 4 * i
        img[40:80, x:x + 40] = car  # a vehicle moving right over a still road
        frames.append(Frame("c1", i, i / 10, img))
        if i < 20:  # the model sees it in frames 0-19, loses it after
            lines.append(f"{i + 1},-1,{x},40,40,40,0.8,3\n")
    write(tmp_path / "c1.txt", "".join(lines))
    cfg = DetectorConfig(type="file", detections_dir=str(tmp_path), classes=[], motion_assist=True,
                         motion_assist_conf=0.12, motion=MotionConfig(history=50, min_area=200))
    det = MotionAssisted(FileDetector(cfg, ["c1"]), cfg, ["c1"])
    out = det.detect(frames[:15]) + det.detect(frames[15:])
    for i in range(10, 20):  # the model's box explains the blob: nothing added
        assert len(out[i]) == 1 and out[i].conf[0] == np.float32(0.8) and out[i].cls[0] == 3
    for i in range(22, 30):  # the model lost it: the blob stands in, at the low confidence, marked as motion's
        assert len(out[i]) == 1, i
        assert out[i].conf[0] == np.float32(0.12) and out[i].cls[0] == MOTION_ONLY
        x0, y0, x1, y1 = out[i].xyxy[0]
        assert abs(x0 - (10 + 4 * i)) <= 8 and abs(y0 - 40) <= 4 and abs(y1 - 80) <= 4


def test_tracks_of_motion_blobs_alone_are_dropped_and_mixed_ones_take_the_model_class() -> None:
    img = np.zeros((120, 200, 3), np.uint8)
    b = TrackletBuilder("c1", TrackletConfig(min_boxes=3, static_min_conf=0.0))
    for i in range(10):
        cls = 3 if i < 4 else MOTION_ONLY  # track 1: the model's motorbike, then motion's blob
        b.update(Frame("c1", i, i / 10, img), Detections([[10 + 5 * i, 40, 50 + 5 * i, 80],
                                                         [100 + 5 * i, 40, 140 + 5 * i, 80]],
                                                        [0.6 if i < 4 else 0.2, 0.2], [cls, MOTION_ONLY], [1, 2]))
    closed = b.flush()
    assert [t.local_id for t in closed] == [1] and b.dropped_motion == 1  # track 2: motion alone
    assert closed[0].cls == 3 and {x.cls for x in closed[0].boxes} == {3}
