"""Crop quality: how useful a crop is for re-ID, from box size, sharpness, confidence and truncation."""

from __future__ import annotations

import cv2
import numpy as np

from reidd.config import CropQualityWeights

#: Box side (sqrt of area) at which the size term saturates, pixels.
REF_SIDE = 128.0
#: Laplacian variance giving a sharpness term of 0.5.
SHARPNESS_HALF = 100.0


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the grey crop (higher = sharper)."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if crop.ndim == 3 else crop
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def box_quality(
    xyxy: tuple[float, float, float, float],
    conf: float,
    frame_shape: tuple[int, int],
    weights: CropQualityWeights,
    border_margin: int = 4,
) -> float:
    """The weighted sum of the three terms that need no pixels (size, confidence, border)."""
    x1, y1, x2, y2 = xyxy
    h, w = frame_shape
    side = float(np.sqrt(max(x2 - x1, 0) * max(y2 - y1, 0)))
    cut = x1 <= border_margin or y1 <= border_margin or x2 >= w - border_margin or y2 >= h - border_margin
    return (weights.size * min(1.0, side / REF_SIDE) + weights.confidence * float(np.clip(conf, 0, 1))
            + weights.border * (0.0 if cut else 1.0))


def crop_quality(
    crop: np.ndarray,
    xyxy: tuple[float, float, float, float],
    conf: float,
    frame_shape: tuple[int, int],
    weights: CropQualityWeights,
    border_margin: int = 4,
    at_most_beats: float | None = None,
) -> float | None:
    """Weighted mean of four terms in 0..1; returns 0..1.

    With ``at_most_beats``: returns None, without looking at the pixels, when even a perfectly sharp
    crop could not score above that value (the tracklet builder's current worst kept crop).
    """
    total = weights.size + weights.sharpness + weights.confidence + weights.border
    if total <= 0:
        return 0.0
    partial = box_quality(xyxy, conf, frame_shape, weights, border_margin)
    if at_most_beats is not None and (partial + weights.sharpness) / total <= at_most_beats:
        return None
    s = sharpness(crop) if crop.size else 0.0
    return float((partial + weights.sharpness * s / (s + SHARPNESS_HALF)) / total)
