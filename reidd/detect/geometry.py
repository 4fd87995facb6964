"""Frame geometry shared by the model detectors (YOLO, OpenVINO): the tile layout of ``detector.tiles`` and
how the tiles' boxes become one frame's detections."""

from __future__ import annotations

import math

import numpy as np

from reidd.types import Detections

Tile = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels


def tile_layout(width: int, height: int, tiles: int | str, overlap: int, model_width: int) -> list[Tile]:
    """The frame regions a model sees: the whole frame, or ``tiles`` columns overlapping by ``overlap`` pixels
    ("auto": one column per 1.25 x ``model_width`` of frame width, at most 4)."""
    n = tiles
    if n == "auto":
        n = min(4, max(1, math.ceil(width / (1.25 * model_width))))
    n = int(n)
    if n <= 1 or width <= 2 * overlap:
        return [(0, 0, width, height)]
    step = (width - overlap) / n
    return [(int(round(k * step)), 0, int(round(k * step + step + overlap)) if k < n - 1 else width, height)
            for k in range(n)]


def cover(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Share of each box of ``a`` that each box of ``b`` covers: (len(a), len(b)); boxes are x1, y1, x2, y2."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area = np.clip((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]), 1e-6, None)
    return ix * iy / area[:, None]


def clip_to_frame(dets: Detections, width: int, height: int) -> Detections:
    """Boxes limited to the frame (in place; grown rider boxes and model outputs can reach past it)."""
    if len(dets):
        dets.xyxy[:, [0, 2]] = np.clip(dets.xyxy[:, [0, 2]], 0, width)
        dets.xyxy[:, [1, 3]] = np.clip(dets.xyxy[:, [1, 3]], 0, height)
    return dets


def merge_tiles(pieces: list[tuple[Detections, tuple[int, int, int, int]]], width: int, height: int,
                iou: float, edge_px: float = 2.0) -> Detections:
    """One frame's detections from its overlapping tiles: boxes shifted to frame coordinates; a box that
    touches a tile's inner edge (cut by the tile, and whole in its neighbour thanks to the overlap) is
    dropped; duplicates in the overlaps are suppressed (IoU above ``iou``, or one box nearly inside the
    other), the more confident kept."""
    boxes, confs, classes = [], [], []
    for d, (x0, y0, x1, y1) in pieces:
        if not len(d):
            continue
        b = d.xyxy + np.array([x0, y0, x0, y0], np.float32)
        cut = np.zeros(len(b), bool)
        if x0 > 0:
            cut |= b[:, 0] <= x0 + edge_px
        if x1 < width:
            cut |= b[:, 2] >= x1 - edge_px
        boxes.append(b[~cut])
        confs.append(d.conf[~cut])
        classes.append(d.cls[~cut])
    if not boxes:
        return Detections()
    b, c, k = np.vstack(boxes), np.concatenate(confs), np.concatenate(classes)
    order = np.argsort(-c, kind="stable")
    b, c, k = b[order], c[order], k[order]
    area = np.clip((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6, None)
    keep = np.ones(len(b), bool)
    for i in range(len(b)):
        if not keep[i]:
            continue
        j = np.arange(i + 1, len(b))
        j = j[keep[j] & (k[j] == k[i])]
        if not len(j):
            continue
        ix = np.clip(np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0]), 0, None)
        iy = np.clip(np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1]), 0, None)
        inter = ix * iy
        dup = (inter / (area[i] + area[j] - inter) > iou) | (inter / np.minimum(area[i], area[j]) > 0.8)
        keep[j[dup]] = False
    return Detections(b[keep], c[keep], k[keep])
