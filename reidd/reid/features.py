"""Batched feature extraction: images or samples -> L2-normalised embeddings (N, D).

Preprocessing is the same as the eval path of training: read as RGB, resize to the
model's ``input_size`` (bilinear, antialiased, on uint8), then normalise with the spec's
mean/std (:meth:`ReidModel.normalize`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import ReidModel, pick_device, pick_precision

__all__ = ["ImageReadError", "read_rgb", "resize_uint8", "extract_features", "autocast_context",
           "pick_device", "pick_precision"]


class ImageReadError(ValueError):
    """An image file that is missing, empty or cannot be decoded."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; :class:`ImageReadError` names the file on failure."""
    import cv2

    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image not found: {p}")
    data = np.fromfile(str(p), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None or img.size == 0:
        raise ImageReadError(f"cannot decode image (corrupt or not an image): {p}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def resize_uint8(img_rgb: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """HxWx3 uint8 RGB -> 3xhxw uint8 tensor of ``size`` (h, w), bilinear with antialias."""
    from torchvision.transforms.v2 import functional as TF

    t = torch.from_numpy(np.ascontiguousarray(img_rgb)).permute(2, 0, 1)
    return TF.resize(t, list(size), antialias=True)


def autocast_context(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` for fp16/bf16, a no-op for fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class _ImageSet(torch.utils.data.Dataset):
    """Items: a Sample-like object with ``.path``, a path, or an HxWx3 uint8 **RGB** array."""

    def __init__(self, items: Sequence[Any], size: tuple[int, int]):
        self.items, self.size = items, size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.items[i]
        if isinstance(item, np.ndarray):
            if item.ndim != 3 or item.shape[2] != 3 or item.dtype != np.uint8:
                raise ValueError(f"image {i}: expected HxWx3 uint8 RGB, got {item.shape} {item.dtype}")
            img = item
        else:
            img = read_rgb(getattr(item, "path", item))
        return resize_uint8(img, self.size)


@torch.no_grad()
def extract_features(
    model: ReidModel,
    samples_or_images: Sequence[Any],
    *,
    batch_size: int = 64,
    device: str | torch.device = "auto",
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    precision: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Eval-mode embeddings, L2-normalised, float32 (N, D).

    ``samples_or_images``: Samples (``.path``), file paths, or HxWx3 uint8 RGB arrays.
    ``scales``: input sizes relative to the model's ``input_size``; with several (or ``flip``),
    the L2-normalised embeddings of every view are averaged and re-normalised.
    """
    from tqdm import tqdm

    from reidd.evaluate.rerank import multi_embedding_average

    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales: positive numbers expected, got {list(scales)}")
    dev = device if isinstance(device, torch.device) else pick_device(device)
    dtype = pick_precision(dev, precision)
    model = model.to(dev).eval()
    n = len(samples_or_images)
    if n == 0:
        return np.zeros((0, model.embedding_dim), np.float32)
    h, w = model.spec.input_size
    views: list[np.ndarray] = []
    total = n * len(scales) * (2 if flip else 1)
    bar = tqdm(total=total, desc="embed", unit="img", disable=not progress, leave=False)
    for s in scales:
        size = (max(32, round(h * s)), max(32, round(w * s)))
        outs: list[list[np.ndarray]] = [[] for _ in range(2 if flip else 1)]
        loader = torch.utils.data.DataLoader(
            _ImageSet(samples_or_images, size), batch_size=batch_size, shuffle=False, num_workers=num_workers
        )
        for batch in loader:
            x = batch.to(dev, non_blocking=True)
            x = model.normalize(x)
            for j, xx in enumerate([x, torch.flip(x, dims=[3])] if flip else [x]):
                with autocast_context(dev, dtype):
                    emb = model(xx)
                outs[j].append(torch.nn.functional.normalize(emb.float(), dim=1).cpu().numpy())
                bar.update(len(x))
        views += [np.concatenate(o) for o in outs]
    bar.close()
    return np.ascontiguousarray(multi_embedding_average(views), dtype=np.float32)
