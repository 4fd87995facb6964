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


_INT_RE = re.compile(r"[+-]?[0-9]+")
#: obj_id and frame_id stay exact as floats (motmetrics holds ids as floats: 2**53 and 2**53 + 1 would be one
#: vehicle) and frames leave room to put every camera on one timeline (the evaluator)
MAX_ID = 2**53 - 1
MAX_LINE = 1 << 20  # bytes in one line


def _show(token: str) -> str:
    return repr(token if len(token) <= 40 else token[:37] + "...")


def _as_int(token: str, what: str, where: str, lo: int = -MAX_ID, hi: int = MAX_ID) -> int:
    """An integer in [lo, hi]: digits are read exactly (no float rounding), ``3.0`` and ``1e3`` accepted."""
    if _INT_RE.fullmatch(token):
        try:
            v = int(token)
        except ValueError:  # more digits than Python converts: far out of range anyway
            raise MTMCFormatError(f"{where}: {what} must be in [{lo}, {hi}], got {_show(token)}") from None
    else:
        try:
            f = float(token)
        except ValueError:
            raise MTMCFormatError(f"{where}: {what} must be an integer, got {_show(token)}") from None
        if not math.isfinite(f) or f != int(f):
            raise MTMCFormatError(f"{where}: {what} must be an integer, got {_show(token)}")
        v = int(f)
    if not lo <= v <= hi:
        raise MTMCFormatError(f"{where}: {what} must be in [{lo}, {hi}], got {_show(token)}")
    return v


def _as_float(token: str, what: str, where: str) -> float:
    try:
        v = float(token)
    except ValueError:
        raise MTMCFormatError(f"{where}: {what} must be a number, got {_show(token)}") from None
    if not math.isfinite(v):
        raise MTMCFormatError(f"{where}: {what} must be finite, got {_show(token)}")
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
    try:
        fh = open(p, "rb")
    except OSError as exc:
        raise MTMCFormatError(f"{p}: cannot read: {exc.strerror or exc}") from None
    with fh:
        for lineno, data in enumerate(iter(lambda: fh.readline(MAX_LINE + 1), b""), start=1):
            where = f"{p}:{lineno}"
            if len(data) > MAX_LINE:
                raise MTMCFormatError(f"{where}: line longer than {MAX_LINE >> 20} MiB")
            try:
                raw = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MTMCFormatError(
                    f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {exc.start + 1})") from None
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            parts = _SPLIT_RE.split(text)
            if len(parts) < 7:
                raise MTMCFormatError(
                    f"{where}: expected 'camera_id obj_id frame_id xmin ymin width height [xworld yworld]', "
                    f"got {len(parts)} field(s): {text[:80]!r}"
                )
            cam = camera_key(parts[0])
            obj = _as_int(parts[1], "obj_id", where)
            frame = _as_int(parts[2], "frame_id", where, 0)
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
