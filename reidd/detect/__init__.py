"""Detectors: ultralytics YOLO and background-subtraction motion; both return :class:`reidd.types.Detections`."""

from reidd.detect.base import Detector, build_detector, filter_roi

__all__ = ["Detector", "build_detector", "filter_roi"]
