"""Replay outputs: closed tracklets as JSONL (the MOTChallenge and MTMC writers live with their readers
in :mod:`reidd.formats`).

Writers are tracklet sinks (callables taking a list of tracklets), deterministic for the same input.
"""

from __future__ import annotations

import json
from pathlib import Path

from reidd.formats.mot import MotWriter
from reidd.types import Tracklet


class TrackletJsonlWriter:
    """One JSON object per closed tracklet (``Tracklet.to_record``), in closing order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("w", encoding="utf-8")
        self.count = 0

    def __call__(self, tracklets: list[Tracklet]) -> None:
        for t in tracklets:
            self._fh.write(json.dumps(t.to_record(), sort_keys=True, separators=(",", ":")) + "\n")
            self.count += 1
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


__all__ = ["MotWriter", "TrackletJsonlWriter"]
