"""Detectors: ultralytics YOLO, background-subtraction motion and detection files; all return :class:`reidd.types.Detections`."""

from reidd.detect.base import Detector, DetectorLoadError, build_detector, filter_roi

__all__ = ["Detector", "DetectorLoadError", "build_detector", "filter_roi"]
