"""MOTChallenge text, one box per line: ``frame,id,x,y,w,h,conf,...`` (``frame`` 1-based, ``x,y`` the top-left corner).

* tracks (what ``reidd replay`` writes per camera, :class:`MotWriter`): ``frame,id,x,y,w,h,conf,-1,-1,-1``
  with the camera-local track id, sorted by (frame, id);
* detections (what ``detector.type: file`` reads, :func:`read_mot_detections`): the same columns with the
  id ignored and an optional 8th column that is a COCO class id when it is a non-negative integer
  (absent or negative, MOT's ``-1`` world coordinates: unknown, reported as 2, car). Commas or spaces
  separate the fields; empty lines and lines starting with ``#`` are skipped; a malformed line is an
  error naming the file and line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from reidd.detect.base import DetectorLoadError
from reidd.types import Detections, Tracklet

#: Largest detection file read (bytes; about 6 million boxes): bounds memory for a hostile or mistaken path.
MAX_FILE_BYTES = 256 * 1024**2
UNKNOWN_CLASS = 2


def _num(v: float, decimals: int) -> str:
    return str(int(v)) if isinstance(v, (int, np.integer)) else f"{v:.{decimals}f}"


def format_line(frame_1based: int, obj_id: int, x: float, y: float, w: float, h: float, conf: float) -> str:
    """One MOTChallenge line with ``-1,-1,-1`` world coordinates, newline included (integers stay integers;
    floats get 2 decimals, a float confidence 4)."""
    return (f"{frame_1based},{obj_id},{_num(x, 2)},{_num(y, 2)},{_num(w, 2)},{_num(h, 2)},{_num(conf, 4)}"
            ",-1,-1,-1\n")


def mot_line(frame_1based: int, obj_id: int, xyxy: tuple[float, float, float, float], conf: float) -> str:
    """:func:`format_line` of an ``x1, y1, x2, y2`` box."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return format_line(frame_1based, obj_id, x1, y1, x2 - x1, y2 - y1, float(conf))


class MotWriter:
    """Per-camera MOTChallenge files ``<dir>/<camera>.txt``: ``frame,id,x,y,w,h,conf,-1,-1,-1``.

    ``frame`` is 1-based (the video's frame index + 1), ``id`` the camera-local track id.
    """

    def __init__(self, out_dir: str | Path, camera_ids: list[str]):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._tmp = {c: (self.dir / f"{c}.txt.part").open("w", encoding="utf-8") for c in camera_ids}

    def __call__(self, tracklets: list[Tracklet]) -> None:
        for t in tracklets:
            fh = self._tmp[t.camera_id]
            for b in t.boxes:
                fh.write(mot_line(b.frame + 1, t.local_id, b.xyxy, b.conf))

    def close(self) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for cam, fh in self._tmp.items():
            fh.close()
            part = self.dir / f"{cam}.txt.part"
            lines = part.read_text(encoding="utf-8").splitlines(keepends=True)
            lines.sort(key=lambda s: (int(s.split(",", 2)[0]), int(s.split(",", 2)[1])))
            final = self.dir / f"{cam}.txt"
            final.write_text("".join(lines), encoding="utf-8")
            part.unlink()
            out[cam] = final
        return out


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
