"""A tracklet's colour signature: a hue-saturation histogram of the centre of its best crops.

Free evidence beside the CNN embedding (the metadata re-ranking of the seed research): two tracklets
whose vehicles differ in colour are unlikely to be one vehicle. Only the central part of a crop is
used (a box keeps some road around the vehicle), pixels too dark or too grey to carry a hue count in
an achromatic row of their own (by brightness), and crops are weighted by their quality.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

HUE_BINS = 12
SAT_BINS = 3
GREY_BINS = 4
#: Length of a signature vector.
SIGNATURE_LEN = HUE_BINS * SAT_BINS + GREY_BINS
_CENTRE = 0.6  # the central 60 % of width and height


def colour_signature(crops: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray | None:
    """L1-normalised (SIGNATURE_LEN,) float32 histogram over the crops (uint8 BGR), or None without pixels."""
    total = np.zeros(SIGNATURE_LEN, np.float64)
    for i, crop in enumerate(crops):
        h, w = crop.shape[:2]
        dy, dx = int(h * (1 - _CENTRE) / 2), int(w * (1 - _CENTRE) / 2)
        c = crop[dy:h - dy, dx:w - dx]
        if c.size == 0:
            continue
        hsv = cv2.cvtColor(np.ascontiguousarray(c), cv2.COLOR_BGR2HSV).reshape(-1, 3).astype(np.int32)
        hue, sat, val = hsv[:, 0], hsv[:, 1], hsv[:, 2]
        chroma = (sat >= 50) & (val >= 50)
        bins = np.where(chroma, (hue * HUE_BINS // 180) * SAT_BINS + np.minimum((sat - 50) * SAT_BINS // 206, SAT_BINS - 1),
                        HUE_BINS * SAT_BINS + np.minimum(val * GREY_BINS // 256, GREY_BINS - 1))
        hist = np.bincount(bins, minlength=SIGNATURE_LEN)[:SIGNATURE_LEN].astype(np.float64)
        wgt = 1.0 if weights is None else max(float(weights[i]), 1e-6)
        total += wgt * hist / max(hist.sum(), 1.0)
    s = total.sum()
    return None if s <= 0 else (total / s).astype(np.float32)


def colour_similarity(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Bhattacharyya coefficient of two signatures (1 identical, 0 disjoint); None when one is missing."""
    if a is None or b is None or len(a) != len(b):
        return None
    return float(np.sqrt(np.clip(a, 0, None) * np.clip(b, 0, None)).sum())
