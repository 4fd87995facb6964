"""AI City MTMC text: ``camera_id obj_id frame_id xmin ymin width height [xworld yworld]`` per box.

``frame_id`` is 1-based in the camera's video and ``obj_id`` the global identity across cameras. The
reader accepts spaces or commas, ignores extra columns and ``#`` comments, and canonicalises camera ids
(``41``, ``041``, ``c41`` -> ``c041``; other strings unchanged); the writer produces what
``scripts``, ``reidd eval-mtmc`` and AI City's evaluator read (integers, ``-1 -1`` world coordinates,
sorted by camera, frame, id). Used by ``reidd replay --mtmc`` (:class:`MtmcWriter`), the evaluator
(:func:`read_mtmc`) and the synthetic scenes' ground truth (:func:`format_line`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reidd.types import Tracklet

if TYPE_CHECKING:
    import pandas as pd

_CAM_RE = re.compile(r"[cC]?0*(\d+)")
_SPLIT_RE = re.compile(r"[,\s]+")
COLUMNS = ["camera", "obj_id", "frame", "x", "y", "w", "h", "line"]


def format_line(camera_id: str, obj_id: int, frame_1based: int, x: float, y: float, w: float, h: float) -> str:
    """One MTMC line (pixel values rounded to integers), newline included."""
    return f"{camera_id} {obj_id} {frame_1based} {round(x)} {round(y)} {round(w)} {round(h)} -1 -1\n"


class MTMCFormatError(ValueError):
    """A malformed MTMC file; the message names the file and line."""


def camera_key(token: str) -> str:
    """Canonical camera id: ``41``, ``041``, ``c41`` and ``c041`` -> ``c041``; other strings unchanged."""
    m = _CAM_RE.fullmatch(token)
    return f"c{int(m.group(1)):03d}" if m else token


def _as_int(token: str, what: str, where: str) -> int:
    try:
        v = float(token)
    except ValueError:
        raise MTMCFormatError(f"{where}: {what} must be an integer, got {token!r}") from None
    if not math.isfinite(v) or v != int(v):
        raise MTMCFormatError(f"{where}: {what} must be an integer, got {token!r}")
    return int(v)


def _as_float(token: str, what: str, where: str) -> float:
    try:
        v = float(token)
    except ValueError:
        raise MTMCFormatError(f"{where}: {what} must be a number, got {token!r}") from None
    if not math.isfinite(v):
        raise MTMCFormatError(f"{where}: {what} must be finite, got {token!r}")
    return v


def read_mtmc(path: str | Path) -> pd.DataFrame:
    """Read an MTMC file into a DataFrame with columns ``camera obj_id frame x y w h line``.

    Raises :class:`MTMCFormatError` naming the file and line for a malformed line, and
    ``FileNotFoundError`` when the file does not exist.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"MTMC file not found: {p}")
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    seen: dict[tuple[str, int, int], int] = {}
    with open(p, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            where = f"{p}:{lineno}"
            parts = _SPLIT_RE.split(text)
            if len(parts) < 7:
                raise MTMCFormatError(
                    f"{where}: expected 'camera_id obj_id frame_id xmin ymin width height [xworld yworld]', "
                    f"got {len(parts)} field(s): {text[:80]!r}"
                )
            cam = camera_key(parts[0])
            obj = _as_int(parts[1], "obj_id", where)
            frame = _as_int(parts[2], "frame_id", where)
            if frame < 0:
                raise MTMCFormatError(f"{where}: frame_id must be >= 0, got {frame}")
            x, y, w, h = (_as_float(t, n, where) for t, n in zip(parts[3:7], ("xmin", "ymin", "width", "height")))
            if w <= 0 or h <= 0:
                raise MTMCFormatError(f"{where}: width and height must be > 0, got {w} x {h}")
            key = (cam, obj, frame)
            if key in seen:
                raise MTMCFormatError(
                    f"{where}: obj_id {obj} appears twice in camera {cam} frame {frame} (also line {seen[key]})"
                )
            seen[key] = lineno
            for c, v in zip(COLUMNS, (cam, obj, frame, x, y, w, h, lineno)):
                cols[c].append(v)
    df = pd.DataFrame(cols)
    return df.astype({"camera": str, "obj_id": np.int64, "frame": np.int64, "line": np.int64})


class MtmcWriter:
    """Final per-frame global ids of a replay in MTMC format; sorted by (camera, frame, id) when closed.

    A sink of (tracklet, global id) pairs: ``frame_id`` is the box's 0-based frame + 1."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._part = self.path.with_name(self.path.name + ".part")
        self._fh = self._part.open("w", encoding="utf-8")

    def __call__(self, t: Tracklet, gid: int) -> None:
        for b in t.boxes:
            x1, y1, x2, y2 = b.xyxy
            self._fh.write(format_line(t.camera_id, gid, b.frame + 1, x1, y1, x2 - x1, y2 - y1))

    def close(self) -> Path:
        self._fh.close()
        lines = self._part.read_text(encoding="utf-8").splitlines(keepends=True)
        lines.sort(key=lambda s: (s.split(" ", 1)[0], int(s.split(" ", 3)[2]), int(s.split(" ", 2)[1])))
        self.path.write_text("".join(lines), encoding="utf-8")
        self._part.unlink()
        return self.path
