"""The detector contract: ``detect(frames) -> list[Detections]`` (one per frame, same order)."""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from reidd.config import DetectorConfig
from reidd.types import Detections, Frame


class DetectorLoadError(RuntimeError):
    """The configured detector cannot be used (the message names the field, file or line)."""


class Detector(Protocol):
    """Finds vehicles in a batch of frames (possibly from several cameras)."""

    name: str

    def detect(self, frames: list[Frame]) -> list[Detections]: ...


def filter_roi(dets: Detections, roi: list[tuple[float, float]] | None) -> Detections:
    """Keep detections whose box centre lies inside the polygon (all when ``roi`` is None)."""
    if roi is None or len(dets) == 0:
        return dets
    poly = np.asarray(roi, dtype=np.float32).reshape(-1, 1, 2)
    centres = dets.xywh[:, :2]
    keep = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) >= 0 for x, y in centres], dtype=bool)
    return dets[keep]


def build_detector(cfg: DetectorConfig, camera_ids: list[str] | None = None) -> Detector:
    """Make the detector named by the config (``camera_ids``: the cameras a ``file`` detector reads for)."""
    if cfg.type == "file":
        from reidd.detect.file import FileDetector

        return FileDetector(cfg, list(camera_ids or []))
    if cfg.type == "motion":
        from reidd.detect.motion import MotionDetector

        return MotionDetector(cfg)
    from reidd.detect.yolo import YoloDetector

    return YoloDetector(cfg)
