"""Training and evaluation transforms (torchvision v2) on uint8 CHW RGB tensors."""

from __future__ import annotations

from typing import Any

import torch


def build_transforms(
    input_size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    train: bool,
    flip_p: float = 0.5,
    pad: int = 10,
    color_jitter: float = 0.2,
    erasing_p: float = 0.5,
) -> Any:
    """Train: resize, horizontal flip, pad + random crop, colour jitter, to float, normalise, random
    erasing. Eval: resize, to float, normalise. Input: uint8 (3, H, W) RGB tensor."""
    from torchvision.transforms import v2

    size = list(input_size)
    steps: list[Any] = [v2.Resize(size, antialias=True)]
    if train:
        if flip_p > 0:
            steps.append(v2.RandomHorizontalFlip(flip_p))
        if pad > 0:
            steps += [v2.Pad(pad, padding_mode="constant"), v2.RandomCrop(size)]
        if color_jitter > 0:
            cj = color_jitter
            steps.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj, hue=min(cj / 4, 0.5)))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    if train and erasing_p > 0:
        steps.append(v2.RandomErasing(p=erasing_p, scale=(0.02, 0.33), value=0))
    return v2.Compose(steps)
