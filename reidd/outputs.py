"""Replay outputs: closed tracklets as JSONL and per-camera MOTChallenge text.

Writers are tracklet sinks (callables taking a list of tracklets). MOT lines are appended as
tracklets close and sorted by (frame, id) when the writer closes, so the files are
deterministic and identical between runs of the same input.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def mot_line(frame_1based: int, obj_id: int, xyxy: tuple[float, float, float, float], conf: float) -> str:
    x1, y1, x2, y2 = xyxy
    return f"{frame_1based},{obj_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{conf:.4f},-1,-1,-1\n"


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
