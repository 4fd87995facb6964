"""The re-ID stage's input, recorded: embedded tracklets and clock ticks in the order the stage saw them.

``reidd replay --save-embeddings`` writes ``OUT/embeddings.jsonl``; :func:`rematch` feeds it back through
a fresh gallery, matcher and event sinks, so the cross-camera association can be re-run with other
``matching`` settings in seconds, without decoding, detecting, tracking or embedding again. Replaying
a log with the configuration that recorded it gives the same decisions, events and MTMC file as the
replay itself (tested).

One JSON object per line: ``{"q": {...}}`` an embedded tracklet (boxes, class, embedding as base64
float32, colour signature likewise), ``{"n": {...}}`` a tracklet without crops, ``{"t": ts}`` a decision tick
at pipeline time ``ts``. The first line is ``{"reidd_embeddings": 1, "dim": D}``.
A replay writes it as it goes (nothing is held in memory).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from reidd.types import BoxRecord, Tracklet, TrackletEmbedding

VERSION = 1


class RecordingError(ValueError):
    """An embeddings log that cannot be read (the message names the file and line)."""


def _tracklet_record(t: Tracklet) -> dict:
    return {"cam": t.camera_id, "lid": t.local_id, "seg": t.segment, "reason": t.reason, "cls": t.cls,
            "boxes": [[b.frame, b.ts, *b.xyxy, b.conf, b.cls] for b in t.boxes],
            **({"ses": t.session} if t.session else {})}


def _tracklet(d: dict) -> Tracklet:
    boxes = [BoxRecord(int(b[0]), float(b[1]), (float(b[2]), float(b[3]), float(b[4]), float(b[5])), float(b[6]),
                       int(b[7])) for b in d["boxes"]]
    if not boxes:
        raise ValueError("a tracklet without boxes")
    return Tracklet(str(d["cam"]), int(d["lid"]), int(d["seg"]), boxes, [], str(d["reason"]), int(d["cls"]),
                    str(d.get("ses", "")))


class EmbeddingLog:
    """Writer (replay only: the stage calls it from the pipeline thread)."""

    def __init__(self, path: str | Path, dim: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("w", encoding="utf-8")
        self._last_tick: float | None = None
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

    def tick(self, ts: float | None) -> None:
        if ts is not None and ts != self._last_tick:
            self._last_tick = ts
            self._write({"t": ts})

    def close(self) -> None:
        self._fh.close()


def read_embedding_log(path: str | Path) -> Iterator[tuple[str, object]]:
    """Yields ``("dim", D)`` first, then ``("query", TrackletEmbedding)``, ``("no_crops", Tracklet)`` and
    ``("tick", ts)`` in recorded order. Raises :class:`RecordingError` naming the file and line."""
    p = Path(path)
    try:
        fh = p.open(encoding="utf-8")
    except OSError as exc:
        raise RecordingError(f"{p}: cannot read: {exc.strerror or exc}") from None
    dim = None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if n == 1 or dim is None:
                    if obj.get("reidd_embeddings") != VERSION:
                        raise ValueError("not a reidd embeddings log (first line)")
                    dim = int(obj["dim"])
                    yield "dim", dim
                elif "t" in obj:
                    yield "tick", float(obj["t"])
                elif "n" in obj:
                    yield "no_crops", _tracklet(obj["n"])
                elif "q" in obj:
                    q = obj["q"]
                    emb = np.frombuffer(base64.b64decode(q["emb"], validate=True), "<f4").astype(np.float32)
                    if len(emb) != dim or not np.isfinite(emb).all():
                        raise ValueError(f"embedding of length {len(emb)} (expected {dim}) or not finite")
                    colour = None if q.get("colour") is None else np.frombuffer(
                        base64.b64decode(q["colour"], validate=True), "<f4").astype(np.float32)
                    yield "query", TrackletEmbedding(_tracklet(q), emb, int(q["crops"]), colour)
                else:
                    raise ValueError("unknown record")
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise RecordingError(f"{p}:{n}: {exc}") from None
            except UnicodeDecodeError:
                raise RecordingError(f"{p}: not a text file") from None


def rematch(cfg, log_path: str | Path, out_dir: str | Path, *, mtmc_path: str | Path | None = None,
            events_jsonl: str | Path | None = None) -> dict:
    """Re-run the cross-camera association of a recorded replay with ``cfg``'s gallery, matching and events
    settings (a private, empty embedded Redis under ``out_dir/state``). Returns a small summary."""
    from reidd.context import RunContext
    from reidd.telemetry import Metrics
    from reidd.runtime import ReidRuntime

    items = read_embedding_log(log_path)
    kind, dim = next(items, ("dim", 0))
    runtime = ReidRuntime(cfg, RunContext.for_replay(), metrics=Metrics(), fresh_state_dir=Path(out_dir) / "state",
                          events_jsonl=events_jsonl, mtmc_path=mtmc_path,
                          embedding_dim=max(int(dim), 1))
    queries = 0
    try:
        for kind, item in items:
            if kind == "tick":
                runtime.stage.tick(float(item))  # advances the media clock, then decides
            elif kind == "query":
                queries += 1
                runtime.stage.submit_embedded([item])
            else:
                runtime.stage.submit_embedded([None], [item])
        runtime.finish()
    finally:
        runtime.close()
    return {"queries": queries, "events": runtime.events, "matches": runtime.stage.matches}
