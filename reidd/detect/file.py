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

import math
from pathlib import Path

import numpy as np

from reidd.config import DetectorConfig
from reidd.detect.base import DetectorLoadError
from reidd.types import Detections, Frame

#: Largest detection file read (bytes; about 6 million boxes): bounds memory for a hostile or mistaken path.
MAX_FILE_BYTES = 256 * 1024**2
UNKNOWN_CLASS = 2


def read_mot_detections(path: Path) -> tuple[dict[int, Detections], bool]:
    """``{frame (1-based): Detections}`` and whether any line gave a class. Raises DetectorLoadError."""
    if not path.is_file():
        raise DetectorLoadError(f"detector.detections_dir: detection file not found: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DetectorLoadError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB (split the recording)")
    rows: dict[int, list[tuple[float, float, float, float, float, int]]] = {}
    has_class = False
    try:
        fh = path.open(encoding="utf-8")
    except OSError as exc:
        raise DetectorLoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    with fh:
        try:
            for n, line in enumerate(fh, 1):
                s = line.strip()
                if not s or s.startswith("#"):
                    continue
                p = s.replace(",", " ").split()
                if len(p) < 7:
                    raise DetectorLoadError(
                        f"{path}:{n}: expected frame,id,x,y,w,h,conf[,class] (7 or more fields), got {len(p)}")
                try:
                    frame_f = float(p[0])
                    x, y, w, h, conf = (float(v) for v in p[2:7])
                except ValueError:
                    raise DetectorLoadError(f"{path}:{n}: fields 1 and 3-7 must be numbers: {s[:80]!r}") from None
                if not frame_f.is_integer() or frame_f < 1:
                    raise DetectorLoadError(f"{path}:{n}: frame must be a whole number >= 1, got {p[0]!r}")
                if not all(math.isfinite(v) for v in (x, y, w, h, conf)):
                    raise DetectorLoadError(f"{path}:{n}: box and confidence must be finite numbers")
                if w <= 0 or h <= 0:
                    raise DetectorLoadError(f"{path}:{n}: width and height must be > 0, got {w:g} x {h:g}")
                cls = UNKNOWN_CLASS
                if len(p) >= 8:
                    try:
                        c = float(p[7])
                    except ValueError:
                        raise DetectorLoadError(f"{path}:{n}: class (field 8) must be a number, got {p[7]!r}") from None
                    if c >= 0:
                        if not c.is_integer():
                            raise DetectorLoadError(f"{path}:{n}: class (field 8) must be a whole number, got {p[7]!r}")
                        cls, has_class = int(c), True
                conf = min(1.0, max(0.0, conf))  # MOT files use -1 or raw scores: clamp into the tracker's range
                rows.setdefault(int(frame_f), []).append((x, y, x + w, y + h, conf, cls))
        except UnicodeDecodeError:
            raise DetectorLoadError(f"{path}: not a text file") from None
    out = {}
    for f, r in rows.items():
        a = np.asarray(r, np.float64)
        out[f] = Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int32))
    return out, has_class


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
