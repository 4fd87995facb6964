"""The re-ID stage's input, recorded: embedded tracklets and clock ticks in the order the stage saw them.

``reidd replay --save-embeddings`` writes ``OUT/embeddings.jsonl``; :func:`rematch` feeds it back through
a fresh gallery, matcher and event sinks, so the cross-camera association can be re-run with other
``matching`` settings in seconds, without decoding, detecting, tracking or embedding again. Replaying
a log with the configuration that recorded it gives the same decisions, events and MTMC file as the
replay itself (tested).

One JSON object per line: ``{"q": {...}}`` an embedded tracklet (boxes, class, embedding as base64
float32, colour signature likewise), ``{"n": {...}}`` a tracklet without crops, ``{"t": ts}`` a decision tick
at pipeline time ``ts``, with ``"p": {camera: [ts or null, [[first_ts, last_ts], ...]]}`` when the cameras'
progress (:class:`~reidd.types.CameraProgress`, null: the source ended) changed since the last tick. The first line is ``{"reidd_embeddings": 1, "dim": D}``.
A replay writes it as it goes (nothing is held in memory).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from reidd.config import printable
from reidd.reid.colour import SIGNATURE_LEN
from reidd.types import BoxRecord, CameraProgress, Progress, Tracklet, TrackletEmbedding

log = logging.getLogger("reidd.rematch")

VERSION = 1


class RecordingError(ValueError):
    """An embeddings log that cannot be read (the message names the file and line)."""


def _tracklet_record(t: Tracklet) -> dict:
    return {"cam": t.camera_id, "lid": t.local_id, "seg": t.segment, "reason": t.reason, "cls": t.cls,
            "boxes": [[b.frame, b.ts, *b.xyxy, b.conf, b.cls] for b in t.boxes],
            **({"ses": t.session} if t.session else {})}


class EmbeddingLog:
    """Writer (replay only: the stage calls it from the pipeline thread)."""

    def __init__(self, path: str | Path, dim: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("w", encoding="utf-8")
        self._last_tick: float | None = None
        self._last_progress: Progress | None = None
        self._write({"reidd_embeddings": VERSION, "dim": int(dim)})

    def _write(self, obj: dict) -> None:
        self._fh.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def query(self, e: TrackletEmbedding) -> None:
        rec = _tracklet_record(e.tracklet)
        rec["emb"] = base64.b64encode(np.asarray(e.embedding, "<f4").tobytes()).decode()
        rec["crops"] = e.crop_count
        rec["colour"] = None if e.colour is None else base64.b64encode(np.asarray(e.colour, "<f4").tobytes()).decode()
        self._write({"q": rec})

    def no_crops(self, t: Tracklet) -> None:
        self._write({"n": _tracklet_record(t)})

    def tick(self, ts: float | None, progress: Progress | None = None) -> None:
        if ts is None:
            return
        changed = progress is not None and progress != self._last_progress
        if ts != self._last_tick or changed:
            self._last_tick = ts
            rec: dict = {"t": ts}
            if changed:
                self._last_progress = progress
                rec["p"] = {cam: [None if math.isinf(p.ts) else p.ts, [list(s) for s in p.open]]
                            for cam, p in progress.items()}
            self._write(rec)

    def close(self) -> None:
        self._fh.close()


# ---------------------------------------------------------------------------------------------- reading
# A log is read twice by ``rematch`` (checked whole, then replayed), never held in memory. Every value is
# checked against what a replay can write, so nothing downstream (gallery, events, MTMC file) meets a
# value it cannot take; the bounds are far beyond any real recording.
MAX_DIM = 65536
#: smallest accepted embedding norm (computed in float64 from the float32 values): a smaller vector (zero,
#: denormal) has no direction left to compare; reidd writes unit vectors
MIN_NORM = 1e-6
MAX_TS = 1e11  # seconds after 1970 (the year 5138): event times must stay inside datetime's range
MAX_INT = 2**53 - 1  # frames, local ids, segments: exact in any JSON reader
MAX_COORD = 1e6  # pixels
MAX_LINE = 64 << 20  # bytes in one line
MAX_OPEN = 100_000  # open tracklets of one camera in a progress record
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # camera ids (as in the config), reasons, sessions


class _Bad(ValueError):
    """One wrong value; the message names its field."""


def _short(v: object) -> str:
    s = repr(v)
    return printable(s if len(s) <= 60 else s[:57] + "...")


def _number(v: object, field: str, lo: float, hi: float) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"{field}: expected a number, got {_short(v)}")
    f = float(v) if not isinstance(v, int) or abs(v) <= 1e300 else math.inf
    if not math.isfinite(f):
        raise _Bad(f"{field}: must be finite, got {_short(v)}")
    if not lo <= f <= hi:
        raise _Bad(f"{field}: must be in [{lo:g}, {hi:g}], got {_short(v)}")
    return f


def _integer(v: object, field: str, lo: int = 0, hi: int = MAX_INT) -> int:
    i = int(v) if isinstance(v, float) and math.isfinite(v) and v == int(v) else v  # 3.0 is 3
    if isinstance(i, bool) or not isinstance(i, int):
        raise _Bad(f"{field}: expected an integer, got {_short(v)}")
    if not lo <= i <= hi:
        raise _Bad(f"{field}: must be in [{lo}, {hi}], got {_short(v)}")
    return i


def _name(v: object, field: str, *, empty: bool = False) -> str:
    if not isinstance(v, str) or not (_NAME_RE.fullmatch(v) or (empty and v == "")):
        raise _Bad(f"{field}: expected a name of letters, digits, '_', '-', '.' (at most 64), got {_short(v)}")
    return v


def _get(d: dict, key: str, field: str) -> object:
    if key not in d:
        raise _Bad(f"{field}.{key}: missing")
    return d[key]


def _floats(v: object, field: str, n: int) -> np.ndarray:
    """``n`` finite float32 values from base64 of little-endian float32."""
    if not isinstance(v, str):
        raise _Bad(f"{field}: expected base64 text, got {_short(v)}")
    try:
        raw = base64.b64decode(v, validate=True)
    except ValueError:
        raise _Bad(f"{field}: not valid base64") from None
    if len(raw) != 4 * n:
        raise _Bad(f"{field}: {len(raw) / 4:g} float32 values, expected {n}")
    x = np.frombuffer(raw, "<f4").astype(np.float32)
    if not np.isfinite(x).all():
        i = int(np.flatnonzero(~np.isfinite(x))[0])
        raise _Bad(f"{field}[{i}]: must be finite, got {x[i]}")
    return x


def _unit(x: np.ndarray, field: str) -> np.ndarray:
    """``x`` at unit length, normalised in float64 (no overflow, no denormal); reidd's own unit vectors as
    recorded, so a rematch repeats its replay exactly."""
    x64 = x.astype(np.float64)
    norm = float(np.sqrt(np.dot(x64, x64)))
    if norm < MIN_NORM:
        raise _Bad(f"{field}: norm {norm:.3g} is zero or too small to normalise (minimum {MIN_NORM:g})")
    if abs(norm - 1.0) <= 1e-4:
        return x
    return (x64 / norm).astype(np.float32)


def _tracklet(d: object, field: str) -> Tracklet:
    if not isinstance(d, dict):
        raise _Bad(f"{field}: expected an object, got {_short(d)}")
    boxes_in = _get(d, "boxes", field)
    if not isinstance(boxes_in, list) or not boxes_in:
        raise _Bad(f"{field}.boxes: expected a non-empty list of boxes, got {_short(boxes_in)}")
    boxes = []
    for i, b in enumerate(boxes_in):
        bf = f"{field}.boxes[{i}]"
        if not isinstance(b, list) or len(b) != 8:
            raise _Bad(f"{bf}: expected [frame, ts, x1, y1, x2, y2, conf, cls], got {_short(b)}")
        x1, y1, x2, y2 = (_number(v, f"{bf}[{k}] ({n})", -MAX_COORD, MAX_COORD)
                          for k, (v, n) in enumerate(zip(b[2:6], ("x1", "y1", "x2", "y2")), 2))
        if x2 < x1 or y2 < y1:
            raise _Bad(f"{bf}: x2 < x1 or y2 < y1 in {_short(b[2:6])}")
        boxes.append(BoxRecord(_integer(b[0], f"{bf}[0] (frame)"), _number(b[1], f"{bf}[1] (ts)", 0, MAX_TS),
                               (x1, y1, x2, y2), _number(b[6], f"{bf}[6] (conf)", 0, 1),
                               _integer(b[7], f"{bf}[7] (cls)", 0, 2**31 - 1)))
    return Tracklet(_name(_get(d, "cam", field), f"{field}.cam"), _integer(_get(d, "lid", field), f"{field}.lid"),
                    _integer(_get(d, "seg", field), f"{field}.seg"), boxes, [],
                    _name(_get(d, "reason", field), f"{field}.reason"),
                    _integer(_get(d, "cls", field), f"{field}.cls", 0, 2**31 - 1),
                    _name(d.get("ses", ""), f"{field}.ses", empty=True))


def _progress(v: object) -> Progress:
    if not isinstance(v, dict):
        raise _Bad(f"p: expected an object of cameras, got {_short(v)}")
    out: Progress = {}
    for cam, rec in v.items():
        field = f"p.{_name(cam, 'p: camera id')}"
        if not isinstance(rec, list) or len(rec) != 2 or not isinstance(rec[1], list):
            raise _Bad(f"{field}: expected [ts or null, [[first_ts, last_ts], ...]], got {_short(rec)}")
        if len(rec[1]) > MAX_OPEN:
            raise _Bad(f"{field}: more than {MAX_OPEN} open tracklets")
        spans = []
        for i, span in enumerate(rec[1]):
            if not isinstance(span, list) or len(span) != 2:
                raise _Bad(f"{field}[1][{i}]: expected [first_ts, last_ts], got {_short(span)}")
            spans.append((_number(span[0], f"{field}[1][{i}][0]", 0, MAX_TS),
                          _number(span[1], f"{field}[1][{i}][1]", 0, MAX_TS)))
        ts = math.inf if rec[0] is None else _number(rec[0], f"{field}[0]", 0, MAX_TS)
        out[cam] = CameraProgress(ts, tuple(spans))
    return out


def _record(obj: object, dim: int) -> tuple[str, object]:
    if not isinstance(obj, dict) or not obj or not (
            set(obj) <= {"t", "p"} and "t" in obj or len(obj) == 1 and next(iter(obj)) in ("n", "q")):
        raise _Bad(f"expected one of {{\"q\": ...}}, {{\"n\": ...}}, {{\"t\": ...}}, got {_short(obj)}")
    if "t" in obj:
        ts = _number(obj["t"], "t", 0, MAX_TS)
        return "tick", (ts, _progress(obj["p"]) if "p" in obj else None)
    if "n" in obj:
        return "no_crops", _tracklet(obj["n"], "n")
    q = obj["q"]
    t = _tracklet(q, "q")
    emb = _unit(_floats(_get(q, "emb", "q"), "q.emb", dim), "q.emb")
    colour = q.get("colour")
    if colour is not None:
        colour = _floats(colour, "q.colour", SIGNATURE_LEN)
        if (colour < 0).any() or (colour > 1).any():
            raise _Bad("q.colour: values must be in [0, 1]")
    return "query", TrackletEmbedding(t, emb, _integer(_get(q, "crops", "q"), "q.crops", 0, 2**31 - 1), colour)


def _header(obj: object) -> int:
    if not isinstance(obj, dict) or obj.get("reidd_embeddings") != VERSION:
        raise _Bad(f"not a reidd embeddings log (the first line must be "
                   f"{{\"reidd_embeddings\": {VERSION}, \"dim\": D}})")
    return _integer(_get(obj, "dim", "header"), "dim", 1, MAX_DIM)


def _lines(fh) -> Iterator[tuple[int, bytes, bool]]:
    """``(line number, bytes, last)``; a line is read up to MAX_LINE + 1 bytes."""
    n, line = 1, fh.readline(MAX_LINE + 1)
    while line:
        nxt = fh.readline(MAX_LINE + 1)
        yield n, line, not nxt
        n, line = n + 1, nxt


def read_embedding_log(path: str | Path, *, warn: bool = True) -> Iterator[tuple[str, object]]:
    """Yields ``("dim", D)`` first, then ``("query", TrackletEmbedding)``, ``("no_crops", Tracklet)`` and
    ``("tick", (ts, progress or None))`` in recorded order (progress None: unchanged since the last tick). Raises :class:`RecordingError` naming the file, line and field.

    A last line without its newline that does not read is what a crash in the middle of a write leaves:
    it is skipped (with a WARNING naming it when ``warn``), the rest of the log is used."""
    p = Path(path)
    shown = printable(str(p))
    try:
        fh = p.open("rb")
    except OSError as exc:
        raise RecordingError(f"{shown}: cannot read: {printable(exc.strerror or str(exc))}") from None
    dim = None
    with fh:
        try:
            for n, raw, last in _lines(fh):
                try:
                    if len(raw) > MAX_LINE:
                        raise _Bad(f"line longer than {MAX_LINE >> 20} MiB")
                    try:
                        text = raw.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise _Bad(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
                    if not text.strip():
                        continue
                    try:
                        obj = json.loads(text)
                    except RecursionError:
                        raise _Bad("JSON nested too deeply") from None
                    except ValueError as exc:
                        raise _Bad(f"not valid JSON ({exc})") from None
                    if dim is None:
                        dim = _header(obj)
                        yield "dim", dim
                    else:
                        yield _record(obj, dim)
                except _Bad as exc:
                    if last and not raw.endswith(b"\n") and dim is not None:
                        if warn:
                            log.warning("%s:%d: skipped the last line: cut short, as a crash while writing "
                                        "leaves it (%s)", shown, n, exc)
                        break
                    raise RecordingError(f"{shown}:{n}: {exc}") from None
        except OSError as exc:
            raise RecordingError(f"{shown}: cannot read: {printable(exc.strerror or str(exc))}") from None
    if dim is None:
        raise RecordingError(f"{shown}: empty, not a reidd embeddings log")


def rematch(cfg, log_path: str | Path, out_dir: str | Path, *, mtmc_path: str | Path | None = None,
            events_jsonl: str | Path | None = None) -> dict:
    """Re-run the cross-camera association of a recorded replay with ``cfg``'s gallery, matching and events
    settings (a private, empty embedded Redis under ``out_dir/state``). Returns a small summary.

    The whole log is read and checked first: a bad line raises :class:`RecordingError` before anything
    (state, events, MTMC file) is written."""
    from reidd.context import RunContext
    from reidd.telemetry import Metrics
    from reidd.runtime import ReidRuntime

    dim = 0
    for kind, item in read_embedding_log(log_path):
        if kind == "dim":
            dim = int(item)
    items = read_embedding_log(log_path, warn=False)  # the same again (warned once above), now used
    next(items)
    runtime = ReidRuntime(cfg, RunContext.for_replay(), metrics=Metrics(), fresh_state_dir=Path(out_dir) / "state",
                          events_jsonl=events_jsonl, mtmc_path=mtmc_path, embedding_dim=dim)
    queries = 0
    progress: Progress | None = None
    try:
        for kind, item in items:
            if kind == "tick":
                ts, changed = item
                progress = changed if changed is not None else progress
                runtime.stage.tick(ts, progress)  # advances the media clock, then decides
            elif kind == "query":
                queries += 1
                runtime.stage.submit_embedded([item])
            else:
                runtime.stage.submit_embedded([None], [item])
        runtime.finish()
    finally:
        runtime.close()
    return {"queries": queries, "events": runtime.events, "matches": runtime.stage.matches}
