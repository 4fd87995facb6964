"""Detections read from files: one MOTChallenge detection file per camera (``detector.type: file``).

``<detections_dir>/<camera id>.txt``, one box per line: ``frame,id,x,y,w,h,conf[,class[,...]]`` with
``frame`` 1-based in that camera's video (the decoder's count, before any ``frame_stride``), ``id``
ignored, ``x,y`` the top-left corner and ``w,h`` the size in pixels. An 8th column that is a
non-negative integer is the COCO class id; absent or negative (MOT's ``-1`` world coordinates) it is
unknown and reported as 2 (car), like the motion detector. Commas or spaces separate the fields;
empty lines and lines starting with ``#`` are skipped. This is how benchmarks (MOTChallenge, AI City)
ship detections, and how a user plugs in any detector of their own; fed with ground-truth boxes it
measures tracking, re-ID and association alone.

Every file is read and checked when the detector is built (before any camera starts), every line of it, and
``reidd check-config`` runs the same check: a missing file or a malformed line is a
:class:`~reidd.detect.base.DetectorLoadError` naming the file and line. The limits (see :mod:`reidd.formats.mot`):
files of at most 256 MiB, lines of at most 4096 bytes, every number finite, ``frame`` 1..100 000 000, ``x``, ``y``
within ±1 000 000 px, ``w``, ``h`` in (0, 1 000 000] px, a class id 0..65 535 (negative: unknown), ``conf`` clamped
into 0..1. A file with no box at all is served (its camera gets no detections) with a WARNING naming it; files
that take more than a few seconds to check log their progress at INFO.

Memory stays small whatever the file's size: the check keeps no boxes, only an index of 8 bytes per run of lines
of one frame (one per frame when the file is sorted by frame; unsorted files work too, at most one per line), and
:meth:`FileDetector.detect` reads each frame's lines through one open file per camera (a seek and a few short
reads per frame).

Boxes are clipped to the frame they are served with: a box partly outside is cut at the image border; one
entirely outside, or less than 1 px wide or tall once clipped, is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from reidd.config import DetectorConfig
from reidd.detect.base import DetectorLoadError
from reidd.formats.mot import MotDetectionIndex, read_mot_detections  # noqa: F401  (re-exported)
from reidd.types import Detections, Frame

log = logging.getLogger("reidd.detect")

#: Smallest width and height (pixels) a box keeps once clipped to its frame.
MIN_CLIPPED_PX = 1.0


def check_detection_file(path: Path, progress: Callable[[str], None] | None = None) -> MotDetectionIndex:
    """Check every line of one camera's file and index it (what the detector and ``reidd check-config`` run;
    ``progress`` gets a message every few seconds of a big file). Raises DetectorLoadError naming the file and
    line."""
    return MotDetectionIndex(path, progress)


def clip_to_frame(dets: Detections, width: int, height: int) -> Detections:
    """Boxes cut at the image border; those outside, or under MIN_CLIPPED_PX wide or tall once cut, dropped."""
    if len(dets) == 0:
        return dets
    xyxy = dets.xyxy.copy()
    np.clip(xyxy[:, 0::2], 0, width, out=xyxy[:, 0::2])
    np.clip(xyxy[:, 1::2], 0, height, out=xyxy[:, 1::2])
    keep = ((xyxy[:, 2] - xyxy[:, 0]) >= MIN_CLIPPED_PX) & ((xyxy[:, 3] - xyxy[:, 1]) >= MIN_CLIPPED_PX)
    return Detections(xyxy[keep], dets.conf[keep], dets.cls[keep])


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
        self._index: dict[str, MotDetectionIndex] = {}
        self._fh: dict[str, object] = {}
        self._lock = threading.Lock()
        self.has_class: dict[str, bool] = {}
        self._keep = np.array(sorted(set(cfg.classes)), np.int32)
        try:
            for cam in camera_ids:
                index = check_detection_file(root / f"{cam}.txt", log.info)
                if index.boxes == 0:
                    log.warning("detections %s: no boxes in the file (camera '%s' gets no detections)",
                                index.path, cam)
                self._index[cam] = index
                self.has_class[cam] = index.has_class
            for cam, index in self._index.items():  # one handle per camera, opened once all files passed
                self._fh[cam] = index.open()
        except BaseException:
            self.close()
            raise

    def _frame(self, cam: str, frame: int) -> Detections:
        index = self._index.get(cam)
        if index is None:
            return Detections.empty()
        with self._lock:
            d = index.read(self._fh[cam], frame)
        if len(d) and self.has_class[cam] and len(self._keep):  # only a known class can be filtered
            d = d[np.isin(d.cls, self._keep)]
        return d

    def detect(self, frames: list[Frame]) -> list[Detections]:
        out = []
        for f in frames:
            d = self._frame(f.camera_id, f.index + 1)
            if len(d):
                h, w = f.shape
                d = clip_to_frame(d, w, h)
            out.append(d)
        return out

    def close(self) -> None:
        """Close the per-camera files (the detector serves nothing after)."""
        for fh in self._fh.values():
            fh.close()
        self._fh.clear()
        self._index.clear()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
