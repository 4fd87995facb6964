"""reidd.detect.yolo geometry: tile layout (detector.tiles), merging tiles' boxes, and grown rider boxes
(detector.rider_grow)."""

from __future__ import annotations

import numpy as np

from reidd.config import DetectorConfig
from reidd.detect.riders import fuse_riders, grow_lone_riders
from reidd.detect.geometry import merge_tiles
from reidd.detect.yolo import YoloDetector
from reidd.types import Detections


def test_lone_rider_boxes_grow_fused_and_vehicle_boxes_do_not() -> None:
    dets = Detections([[100, 50, 140, 130],   # lone rider: 40 x 80
                       [400, 50, 440, 130], [395, 100, 450, 160],  # rider on a detected bike: fused
                       [600, 100, 700, 160]],  # a car
                      [0.8, 0.8, 0.5, 0.9], [0, 0, 3, 2])
    out = fuse_riders(dets, grow=(0.25, 0.0, 0.25, 0.1))
    rows = {tuple(np.round(b, 1).tolist()): int(c) for b, c in zip(out.xyxy, out.cls)}
    assert rows[(90.0, 50.0, 150.0, 138.0)] == 0  # 10 px each side, 8 px below, nothing above the helmet
    assert rows[(395.0, 50.0, 450.0, 160.0)] == 3  # the union, as before
    assert rows[(600.0, 100.0, 700.0, 160.0)] == 2
    assert grow_lone_riders(dets, (0, 0, 0, 0)) is dets


def test_tile_geometry_covers_the_frame_with_overlap() -> None:
    det = YoloDetector.__new__(YoloDetector)  # geometry only: no model needed
    det.cfg = DetectorConfig(tiles="auto", tile_overlap=160, imgsz=640)
    assert det.tiles_for(640, 480) == [(0, 0, 640, 480)]  # not wider than 1.25 x imgsz: whole frame
    two = det.tiles_for(960, 540)
    assert len(two) == 2 and two[0][0] == 0 and two[-1][2] == 960
    assert two[0][2] - two[1][0] == 160  # the overlap
    assert len(det.tiles_for(1920, 1080)) == 3
    det.cfg = DetectorConfig(tiles=1)
    assert det.tiles_for(1920, 1080) == [(0, 0, 1920, 1080)]
    det.cfg = DetectorConfig(tiles=4, tile_overlap=100)
    four = det.tiles_for(1000, 300)
    assert len(four) == 4 and all(a[2] - b[0] == 100 for a, b in zip(four, four[1:])) and four[-1][2] == 1000


def test_merge_tiles_drops_cut_boxes_and_duplicates() -> None:
    # frame 960 wide, tiles [0, 560) and [400, 960): a car at x 500-620 is cut by the left tile's edge
    left = Detections([[100, 10, 200, 60],     # whole, left only
                       [500, 20, 560, 70],     # the car, cut at the left tile's inner edge (x1 = 560)
                       [420, 30, 470, 80]],    # in the overlap: seen by both tiles
                      [0.9, 0.8, 0.6], [2, 2, 3])
    right = Detections([[100, 20, 220, 70],    # the car, whole (frame x 500-620)
                        [20, 30, 70, 80],      # the overlap one again (frame x 420-470), less confident
                        [22, 31, 71, 79]],     # same place, other class: kept
                       [0.85, 0.5, 0.4], [2, 3, 7])
    out = merge_tiles([(left, (0, 0, 560, 540)), (right, (400, 0, 960, 540))], 960, 540, iou=0.7)
    rows = sorted((tuple(np.round(b).astype(int).tolist()), int(c), round(float(s), 2))
                  for b, c, s in zip(out.xyxy, out.cls, out.conf))
    assert rows == [((100, 10, 200, 60), 2, 0.9), ((420, 30, 470, 80), 3, 0.6), ((422, 31, 471, 79), 7, 0.4),
                    ((500, 20, 620, 70), 2, 0.85)]
