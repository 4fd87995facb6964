"""MOTChallenge text, one box per line: ``frame,id,x,y,w,h,conf,...`` (``frame`` 1-based, ``x,y`` the top-left corner).

* tracks (what ``reidd replay`` writes per camera, :class:`MotWriter`): ``frame,id,x,y,w,h,conf,-1,-1,-1``
  with the camera-local track id, sorted by (frame, id);
* detections (what ``detector.type: file`` reads, :class:`MotDetectionIndex`, or :func:`read_mot_detections` for
  a small file at once): the same columns with the id ignored and an optional 8th column that is a COCO class id
  when it is a non-negative integer (absent or negative, MOT's ``-1`` world coordinates: unknown, reported as 2,
  car). Commas or spaces separate the fields; empty lines and lines starting with ``#`` are skipped; a malformed
  line is an error naming the file and line.

Limits of a detection file (each refused with ``file:line`` and the field): at most 256 MiB and lines of at most
4096 bytes; every number finite; ``frame`` a whole number 1..100 000 000; ``x``, ``y`` within ±1 000 000 px;
``w``, ``h`` > 0 and at most 1 000 000 px; a class id a whole number 0..65 535 (negative: unknown). ``conf`` may be
any finite number and is clamped into 0..1. The file need not be sorted by frame (ground truth sorted by track id
is fine); a sorted one is indexed in one key per frame.
"""

from __future__ import annotations

import math
import os
import time
from array import array
from collections.abc import Callable, Iterator
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


# --- detections ---------------------------------------------------------------------------------------------------

#: Limits of a detection line (anything beyond is refused with the file and line): frames are 1-based and at most
#: MAX_FRAME (about 38 days at 30 fps); ``x``, ``y`` within ±MAX_COORD pixels and ``w``, ``h`` in (0, MAX_COORD] (no
#: camera has a million pixels on a side, and float32 boxes stay exact to a fraction of a pixel there); a class id is
#: a whole number 0..MAX_CLASS (negative: unknown); every number finite; a line at most MAX_LINE_BYTES long.
MAX_FRAME = 100_000_000
MAX_COORD = 1_000_000.0
MAX_CLASS = 65_535
MAX_LINE_BYTES = 4096
#: Seconds between progress messages while a big file is checked.
PROGRESS_EVERY_S = 3.0
assert MAX_FILE_BYTES < 1 << 32  # byte offsets fit the low half of an index key

#: One parsed line: frame (1-based), x1, y1, x2, y2, conf (clamped to 0..1), class (UNKNOWN_CLASS when absent), and
#: whether the line gave a class.
Row = tuple[int, float, float, float, float, float, int, bool]


class MotLineError(ValueError):
    """A malformed line (the message, without the file and line)."""


def parse_line(raw: bytes) -> Row | None:
    """One line of a detection file; None for an empty or ``#`` line. Raises :class:`MotLineError`."""
    try:
        s = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise MotLineError("not a text file (invalid UTF-8)") from None
    if not s or s[0] == "#":
        return None
    p = s.replace(",", " ").split()
    if len(p) < 7:
        raise MotLineError(f"expected frame,id,x,y,w,h,conf[,class] (7 or more fields), got {len(p)}")
    try:
        fr = float(p[0])
        x, y, w, h, conf = float(p[2]), float(p[3]), float(p[4]), float(p[5]), float(p[6])
    except ValueError:
        raise MotLineError(f"fields 1 and 3-7 must be numbers: {s[:80]!r}") from None
    if not (1 <= fr <= MAX_FRAME and fr.is_integer()):
        raise MotLineError(f"frame must be a whole number >= 1 and <= {MAX_FRAME}, got {p[0][:40]!r}")
    if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(w) and math.isfinite(h) and math.isfinite(conf)):
        raise MotLineError(f"box and confidence must be finite numbers: {s[:80]!r}")
    if not (-MAX_COORD <= x <= MAX_COORD and -MAX_COORD <= y <= MAX_COORD):
        raise MotLineError(f"x and y must be within ±{MAX_COORD:.0f} px, got {x:g}, {y:g}")
    if w <= 0 or h <= 0:
        raise MotLineError(f"width and height must be > 0, got {w:g} x {h:g}")
    if w > MAX_COORD or h > MAX_COORD:
        raise MotLineError(f"width and height must be <= {MAX_COORD:.0f} px, got {w:g} x {h:g}")
    cls, has_class = UNKNOWN_CLASS, False
    if len(p) >= 8:
        try:
            c = float(p[7])
        except ValueError:
            raise MotLineError(f"class (field 8) must be a number, got {p[7][:40]!r}") from None
        if not math.isfinite(c):
            raise MotLineError(f"class (field 8) must be a finite number, got {p[7][:40]!r}")
        if c >= 0:
            if not (c.is_integer() and c <= MAX_CLASS):
                raise MotLineError(f"class (field 8) must be a whole number 0..{MAX_CLASS} (negative: unknown), "
                           f"got {p[7][:40]!r}")
            cls, has_class = int(c), True
    conf = min(1.0, max(0.0, conf))  # MOT files use -1 or raw scores: clamp into the tracker's range
    return int(fr), x, y, x + w, y + h, conf, cls, has_class


def _open(path: Path):
    if not path.is_file():
        raise DetectorLoadError(f"detector.detections_dir: detection file not found: {path}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DetectorLoadError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB (split the recording)")
    try:
        return path.open("rb")
    except OSError as exc:
        raise DetectorLoadError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _lines(path: Path, fh, progress: Callable[[str], None] | None = None) -> Iterator[tuple[int, int, Row]]:
    """``(line number, byte offset, row)`` of every box line of an open file, each line checked; errors name the
    file and line. ``progress`` gets a message every few seconds (and one at the end when it took that long)."""
    total = os.fstat(fh.fileno()).st_size
    t0 = last = time.monotonic()
    pos = 0
    n = 0
    readline = fh.readline
    while True:
        raw = readline(MAX_LINE_BYTES + 1)
        if not raw:
            break
        n += 1
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise DetectorLoadError(f"{path}:{n}: line longer than {MAX_LINE_BYTES} bytes")
        try:
            row = parse_line(raw)
        except MotLineError as exc:
            raise DetectorLoadError(f"{path}:{n}: {exc}") from None
        if row is not None:
            yield n, pos, row
        pos += len(raw)
        if progress is not None and not n & 0xFFFF and (now := time.monotonic()) - last >= PROGRESS_EVERY_S:
            last = now
            progress(f"detections {path.name}: {pos / 1e6:.0f} MB of {total / 1e6:.0f} MB checked")
    if progress is not None and last != t0:
        progress(f"detections {path.name}: {pos / 1e6:.0f} MB checked in {time.monotonic() - t0:.1f} s")


def read_mot_detections(path: Path) -> tuple[dict[int, Detections], bool]:
    """``{frame (1-based): Detections}`` and whether any line gave a class, the whole file in memory (small files;
    :class:`MotDetectionIndex` serves big ones frame by frame). Raises DetectorLoadError naming the file and line."""
    rows: dict[int, list[tuple[float, float, float, float, float, int]]] = {}
    has_class = False
    with _open(path) as fh:
        for _, _, (fr, x1, y1, x2, y2, conf, cls, hc) in _lines(path, fh):
            rows.setdefault(fr, []).append((x1, y1, x2, y2, conf, cls))
            has_class |= hc
    return {f: _detections(r) for f, r in rows.items()}, has_class


def _detections(rows: list[tuple[float, float, float, float, float, int]]) -> Detections:
    a = np.asarray(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int32))


class MotDetectionIndex:
    """A detection file checked line by line and indexed, served frame by frame without holding its boxes.

    Building reads the file once, checks every line (errors name the file and line) and keeps one 8-byte key per
    *run* (consecutive box lines of one frame): ``frame << 32 | byte offset of the run``, sorted. A file sorted by
    frame (what detectors write) has one run per frame; an unsorted one (ground truth sorted by track id) at most
    one per line, still served in frame order. :meth:`read` seeks to each run of a frame and parses its lines.
    """

    def __init__(self, path: Path, progress: Callable[[str], None] | None = None):
        self.path = Path(path)
        keys = array("Q")
        self.boxes = 0
        self.has_class = False
        prev = 0
        with _open(self.path) as fh:
            for _, pos, row in _lines(self.path, fh, progress):
                self.boxes += 1
                if row[7]:
                    self.has_class = True
                if row[0] != prev:
                    prev = row[0]
                    keys.append(prev << 32 | pos)
        idx = np.frombuffer(keys, np.uint64) if keys else np.zeros(0, np.uint64)
        if len(idx) > 1 and not bool((idx[1:] > idx[:-1]).all()):
            idx.sort()  # in place: frames in order, each frame's runs in file order
        self._keys = idx
        self.runs = len(idx)

    def open(self):
        """A binary handle for :meth:`read` (the caller closes it)."""
        return _open(self.path)

    def read(self, fh, frame: int) -> Detections:
        """The boxes of ``frame`` (1-based), in file order, read through ``fh`` (from :meth:`open`)."""
        if not 1 <= frame <= MAX_FRAME or not len(self._keys):
            return Detections.empty()
        lo, hi = np.searchsorted(self._keys, [np.uint64(frame << 32), np.uint64((frame + 1) << 32)])
        if lo == hi:
            return Detections.empty()
        rows = []
        for key in self._keys[lo:hi].tolist():
            fh.seek(key & 0xFFFFFFFF)
            while raw := fh.readline(MAX_LINE_BYTES + 1):
                try:
                    row = parse_line(raw)
                except MotLineError:
                    raise DetectorLoadError(f"{self.path}: changed since it was checked (frame {frame})") from None
                if row is None:
                    continue
                if row[0] != frame:
                    break
                rows.append(row[1:7])
        return _detections(rows)
