"""Detections read from files: one MOTChallenge detection file per camera (``detector.type: file``).

``<detections_dir>/<camera id>.txt``, one box per line: ``frame,id,x,y,w,h,conf[,class[,...]]`` with
``frame`` 1-based in that camera's video (the decoder's count, before any ``frame_stride``), ``id``
ignored, ``x,y`` the top-left corner and ``w,h`` the size in pixels. An 8th column that is a
non-negative integer is the COCO class id; absent or negative (MOT's ``-1`` world coordinates) it is
unknown and reported as 2 (car), like the motion detector. Commas or spaces separate the fields;
empty lines and lines starting with ``#`` are skipped. This is how benchmarks (MOTChallenge, AI City)
ship detections, and how a user plugs in any detector of their own; fed with ground-truth boxes it
measures tracking, re-ID and association alone.

Every file is read and checked when the detector is built (before any camera starts): a missing file
or a malformed line is a :class:`~reidd.detect.base.DetectorLoadError` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reidd.config import DetectorConfig
from reidd.detect.base import DetectorLoadError
from reidd.formats.mot import read_mot_detections
from reidd.types import Detections, Frame


class FileDetector:
    """Serves each frame the boxes its camera's file lists for it (none when the file lists none)."""

    name = "file"

    def __init__(self, cfg: DetectorConfig, camera_ids: list[str]):
        if not cfg.detections_dir:
            raise DetectorLoadError("detector.detections_dir: required when detector.type is 'file'")
        self.cfg = cfg
        root = Path(cfg.detections_dir)
        if not root.is_dir():
            raise DetectorLoadError(f"detector.detections_dir: not a folder: {root}")
        self._dets: dict[str, dict[int, Detections]] = {}
        self.has_class: dict[str, bool] = {}
        keep = set(cfg.classes)
        for cam in camera_ids:
            dets, has_class = read_mot_detections(root / f"{cam}.txt")
            if has_class and keep:  # only a known class can be filtered
                dets = {f: d[np.isin(d.cls, list(keep))] for f, d in dets.items()}
            self._dets[cam] = dets
            self.has_class[cam] = has_class

    def detect(self, frames: list[Frame]) -> list[Detections]:
        out = []
        for f in frames:
            d = self._dets.get(f.camera_id, {}).get(f.index + 1)
            out.append(Detections.empty() if d is None else d)
        return out
