"""The detector contract: ``detect(frames) -> list[Detections]`` (one per frame, same order)."""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from reidd.config import DetectorConfig
from reidd.types import Detections, Frame


class DetectorLoadError(RuntimeError):
    """The configured detector cannot be used (the message names the field, file or line)."""


def one_line(exc: BaseException) -> str:
    """A runtime's error message on one line, at most 300 characters (for a DetectorLoadError)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


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
    """Make the detector named by ``cfg.type`` (:data:`reidd.detect.registry.DETECTORS`); ``camera_ids``: the
    cameras it serves (a ``file`` detector reads one file for each)."""
    import importlib

    from reidd.detect.registry import DETECTORS

    module, _, name = DETECTORS[cfg.type][0].partition(":")
    det = getattr(importlib.import_module(module), name)(cfg, list(camera_ids or []))
    if cfg.gate and cfg.type in ("yolo", "openvino"):
        from reidd.detect.gate import MotionGate

        det = MotionGate(det, cfg, list(camera_ids or []))
    if cfg.motion_assist and cfg.type in ("yolo", "openvino"):
        from reidd.detect.motion import MotionAssisted

        det = MotionAssisted(det, cfg, list(camera_ids or []))
    return det
