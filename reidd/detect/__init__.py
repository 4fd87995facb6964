"""Detectors: ultralytics YOLO, background-subtraction motion and detection files; all return :class:`reidd.types.Detections`.

The names below load lazily, so that ``reidd.config`` can read :mod:`reidd.detect.registry` (the detector
types) without importing the detectors or the config itself in a cycle.
"""

from typing import Any

__all__ = ["Detector", "DetectorLoadError", "build_detector", "filter_roi"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from reidd.detect import base

        return getattr(base, name)
    raise AttributeError(f"module 'reidd.detect' has no attribute {name!r}")
