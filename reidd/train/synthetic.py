"""A tiny generated re-ID dataset (coloured, patterned "vehicles" seen by several cameras) for
tests and demos: ``<id>_cam<k>_v<view>.jpg`` files, readable by the ``folder`` layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_toy_reid_dataset(root: str | Path, *, num_ids: int = 12, cams: int = 2, per_cam: int = 2,
                           size: tuple[int, int] = (48, 64), seed: int = 0) -> Path:
    """Write ``num_ids`` identities x ``cams`` cameras x ``per_cam`` images under ``root``.

    Each identity has its own body colour, stripe colour, stripe count and orientation; every image
    is shifted, scaled in brightness and noised, and each camera adds its own colour cast.
    """
    import cv2

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    for pid in range(num_ids):
        body = rng.integers(30, 226, 3)
        stripe = 255 - body
        n_stripes = int(rng.integers(1, 5))
        vertical = bool(rng.integers(0, 2))
        base = np.zeros((h, w, 3), np.float32)
        base[:] = body
        for j in range(n_stripes):
            a = int((j + 0.5) * (w if vertical else h) / (n_stripes + 0.5))
            if vertical:
                base[:, a : a + max(2, w // 12)] = stripe
            else:
                base[a : a + max(2, h // 12), :] = stripe
        for cam in range(1, cams + 1):
            cast = rng.normal(0, 12, 3)
            for v in range(per_cam):
                dy, dx = (int(x) for x in rng.integers(-3, 4, 2))
                img = np.roll(base, (dy, dx), axis=(0, 1)) * rng.uniform(0.8, 1.2) + cast
                img += rng.normal(0, 8, img.shape)
                out = np.clip(img, 0, 255).astype(np.uint8)
                cv2.imwrite(str(root / f"{pid:04d}_cam{cam}_v{v}.jpg"), out)
    return root
