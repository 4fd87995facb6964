"""reidd.track quality: crop scoring prefers large, sharp, uncut boxes."""

from __future__ import annotations

import cv2
import numpy as np


def test_crop_quality_prefers_large_sharp_uncut_boxes() -> None:
    from reidd.config import CropQualityWeights
    from reidd.track.quality import crop_quality

    w = CropQualityWeights()
    rng = np.random.default_rng(1)
    sharp = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
    blurred = cv2.GaussianBlur(sharp, (21, 21), 8)
    big = crop_quality(sharp, (100, 100, 200, 200), 0.9, (480, 640), w)
    assert big > crop_quality(blurred, (100, 100, 200, 200), 0.9, (480, 640), w)
    assert big > crop_quality(sharp[:30, :30], (100, 100, 130, 130), 0.9, (480, 640), w)
    assert big > crop_quality(sharp, (0, 100, 100, 200), 0.9, (480, 640), w)  # cut by the border
    assert big > crop_quality(sharp, (100, 100, 200, 200), 0.3, (480, 640), w)
