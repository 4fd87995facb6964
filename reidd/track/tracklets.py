"""Tracklet builder: turns one camera's per-frame tracks into closed :class:`~reidd.types.Tracklet` pieces.

For every open track it keeps the boxes since the tracklet started and the best ``max_crops``
crops by quality (a min-heap, so memory per track is bounded). A tracklet closes when its track
has not been seen for ``lost_frames`` processed frames (``lost``), when the source ends or the
daemon stops (``end``), or, for long-lived tracks, every ``max_frames`` boxes (``periodic``: the
track goes on in a new segment with the same local id). A track last seen at the edge of the frame has
most likely left it: it closes after ``exit_frames`` unseen frames (``exit``), so that its decision need
not wait ``lost_frames`` (an edge its first box did not touch already: a vehicle coming in at an edge, seen
there on and off, is not leaving); if the tracker finds it again, it goes on as the next segment. At most ``max_open_tracks`` are open per
camera; past that the least recently seen is closed (``evicted``). Memory is therefore bounded by
``max_open_tracks * (max_frames boxes + max_crops crops)`` per camera however long the run.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from reidd.config import TrackletConfig
from reidd.detect.riders import MOTORCYCLE, PERSON
from reidd.track.quality import crop_quality
from reidd.types import MOTION_ONLY, BoxRecord, Crop, Detections, Frame, Tracklet


def track_speed(boxes: list[BoxRecord]) -> float:
    """How fast a track moves: displacement of its box centre per second, in median box heights."""
    if len(boxes) < 2 or boxes[-1].ts <= boxes[0].ts:
        return 0.0
    a, b = boxes[0].xyxy, boxes[-1].xyxy
    dist = float(np.hypot((b[0] + b[2] - a[0] - a[2]) / 2, (b[1] + b[3] - a[1] - a[3]) / 2))
    height = float(np.median([x.xyxy[3] - x.xyxy[1] for x in boxes]))
    return dist / max(height, 1.0) / (boxes[-1].ts - boxes[0].ts)


@dataclass
class _Open:
    local_id: int
    segment: int
    last_seen: int  # processed-frame counter of the camera
    entry_edges: int | None = None  # the frame edges its first box touched (bits: left, top, right, bottom)
    exit_edges: int = 0  # edges its last box touches that its first did not: it is leaving there
    boxes: list[BoxRecord] = field(default_factory=list)
    heap: list[tuple[float, int, Crop]] = field(default_factory=list)  # (quality, frame, crop): min-heap


class TrackletBuilder:
    """One per camera. Call :meth:`update` with every processed frame's tracks, :meth:`flush` at the end."""

    def __init__(self, camera_id: str, cfg: TrackletConfig, session: str = ""):
        self.camera_id = camera_id
        self.cfg = cfg
        self.session = session  # see Tracklet.session
        self._open: dict[int, _Open] = {}
        self._exited: OrderedDict[int, int] = OrderedDict()  # track id closed at the edge -> its next segment
        self._tick = 0
        self.last_ts: float | None = None  # time of the latest processed frame
        self.dropped_short = 0
        self.dropped_pedestrians = 0
        self.dropped_static = 0
        self.dropped_motion = 0
        self.closed = 0

    @property
    def open_count(self) -> int:
        return len(self._open)

    def update(self, frame: Frame, tracks: Detections) -> list[Tracklet]:
        """Add this frame's tracked boxes; return the tracklets that closed (ordered by local id)."""
        self._tick += 1
        self.last_ts = frame.ts
        h, w = frame.shape
        m = self.cfg.border_margin
        done: list[Tracklet] = []
        ids = tracks.track_id if tracks.track_id is not None else np.zeros((0,), np.int64)
        for i in range(len(tracks)):
            tid = int(ids[i])
            st = self._open.get(tid)
            if st is None:  # a new track, or one that closed at the edge and came back: its next segment
                st = self._open[tid] = _Open(local_id=tid, segment=self._exited.pop(tid, 0), last_seen=self._tick)
            st.last_seen = self._tick
            x1, y1, x2, y2 = (float(v) for v in tracks.xyxy[i])
            edges = (x1 <= m) | (y1 <= m) << 1 | (x2 >= w - m) << 2 | (y2 >= h - m) << 3
            if st.entry_edges is None:
                st.entry_edges = edges
            st.exit_edges = edges & ~st.entry_edges
            conf = float(tracks.conf[i])
            st.boxes.append(BoxRecord(frame.index, frame.ts, (x1, y1, x2, y2), conf, int(tracks.cls[i])))
            self._offer_crop(st, frame, (x1, y1, x2, y2), conf, (h, w))
            if len(st.boxes) >= self.cfg.max_frames:
                done += self._close(st, "periodic")
                self._open[tid] = _Open(local_id=tid, segment=st.segment + 1, last_seen=self._tick)
        for tid in sorted(self._open):
            st = self._open[tid]
            unseen = self._tick - st.last_seen
            if unseen >= self.cfg.lost_frames:
                del self._open[tid]
                done += self._close(st, "lost")
            elif st.exit_edges and unseen >= self.cfg.exit_frames:
                del self._open[tid]
                self._exited[tid] = st.segment + 1
                while len(self._exited) > self.cfg.max_open_tracks:
                    self._exited.popitem(last=False)
                done += self._close(st, "exit")
        while len(self._open) > self.cfg.max_open_tracks:
            tid = min(self._open, key=lambda t: (self._open[t].last_seen, t))
            done += self._close(self._open.pop(tid), "evicted")
        done.sort(key=lambda t: (t.local_id, t.segment))
        return done

    def open_spans(self) -> list[tuple[float, float]]:
        """``(first_ts, last_ts)`` of every open tracklet (what it will report when it closes, so far)."""
        return [(st.boxes[0].ts, st.boxes[-1].ts) for st in self._open.values() if st.boxes]

    def flush(self, reason: str = "end") -> list[Tracklet]:
        """Close every open tracklet (source finished or daemon stopping)."""
        done: list[Tracklet] = []
        for tid in sorted(self._open):
            done += self._close(self._open[tid], reason)
        self._open.clear()
        return done

    def _offer_crop(self, st: _Open, frame: Frame, xyxy: tuple[float, float, float, float], conf: float,
                    shape: tuple[int, int]) -> None:
        h, w = shape
        x1, y1 = max(0, int(np.floor(xyxy[0]))), max(0, int(np.floor(xyxy[1])))
        x2, y2 = min(w, int(np.ceil(xyxy[2]))), min(h, int(np.ceil(xyxy[3])))
        if x2 - x1 < self.cfg.min_crop_size or y2 - y1 < self.cfg.min_crop_size:
            return
        view = frame.image[y1:y2, x1:x2]
        worst = st.heap[0][0] if len(st.heap) >= self.cfg.max_crops else None
        q = crop_quality(view, xyxy, conf, shape, self.cfg.quality, self.cfg.border_margin, at_most_beats=worst)
        if q is None or (worst is not None and q <= worst):
            return
        crop = Crop(frame.index, frame.ts, xyxy, view.copy(), q)  # copy: never keep the whole frame alive
        item = (q, frame.index, crop)
        if len(st.heap) < self.cfg.max_crops:
            heapq.heappush(st.heap, item)
        else:
            heapq.heapreplace(st.heap, item)

    def _close(self, st: _Open, reason: str) -> list[Tracklet]:
        if len(st.boxes) < self.cfg.min_boxes:
            self.dropped_short += 1
            return []
        crops = [c for _, _, c in sorted(st.heap, key=lambda it: (-it[0], it[1]))]
        votes = Counter(b.cls for b in st.boxes if b.cls != MOTION_ONLY)
        if not votes:  # only detector.motion_assist's blobs, never a model box: not a vehicle the model saw
            self.dropped_motion += 1
            return []
        cls = votes.most_common(1)[0][0]
        if cls == PERSON:  # lone rider boxes (detector.riders): a vehicle only if it moves like one
            if track_speed(st.boxes) < self.cfg.min_rider_speed:
                self.dropped_pedestrians += 1
                return []
            cls = MOTORCYCLE
        if cls != PERSON and any(b.cls in (PERSON, MOTION_ONLY) for b in st.boxes):  # one class for the track
            st.boxes = [dataclasses.replace(b, cls=cls) if b.cls in (PERSON, MOTION_ONLY) else b for b in st.boxes]
        if (self.cfg.static_min_conf > 0 and float(np.mean([b.conf for b in st.boxes])) < self.cfg.static_min_conf
                and track_speed(st.boxes) < self.cfg.static_speed):
            self.dropped_static += 1  # a static thing the detector half-believes, not a vehicle
            return []
        self.closed += 1
        return [Tracklet(self.camera_id, st.local_id, st.segment, st.boxes, crops, reason, cls, self.session)]
