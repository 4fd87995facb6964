"""The plain dataclasses every stage of reidd speaks in.

Each stage takes and returns these; stages never reach into each other.
Boxes are always ``x1, y1, x2, y2`` in pixels of the original frame (float32).
Times: ``ts`` is the camera's timeline in seconds (media time for files,
wall-clock epoch seconds for live sources); ``frame`` is the 0-based index of
the frame in that camera's stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: COCO class ids of vehicles, and their names (the default detector filter).
VEHICLE_CLASSES: dict[int, str] = {2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
#: The class of a box ``detector.motion_assist`` added (a moving blob the model did not report): the tracklet builder
#: gives such boxes the class of the model's boxes in the same track, and drops tracks motion alone carried.
MOTION_ONLY = -1


@dataclass(slots=True)
class Frame:
    """One decoded image from one camera."""

    camera_id: str
    index: int  # 0-based index in the camera's stream (after no skipping: the decoder's count)
    ts: float  # seconds on the camera's timeline (media time + offset, or wall clock)
    image: np.ndarray  # HxWx3 uint8 BGR
    wall_time: float = 0.0  # time.time() when read
    live: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass(slots=True)
class Detections:
    """Boxes found in one frame. Every detector returns this; every tracker takes it.

    ``track_id`` is filled by trackers (``-1`` where unknown).

    Contract: :class:`reidd.track.tracker.CameraTracker` hands this object to ultralytics' BYTETracker /
    BOTSORT ``update`` as if it were its ``Results.boxes``. They read ``conf``, ``xywh``, ``xyxy`` and
    ``cls`` by attribute, slice with boolean masks and index arrays (``__getitem__``) and take ``len``;
    keep those names, shapes and semantics (``xywh`` is centre x, centre y, width, height) when
    changing this class, or tracking breaks.
    """

    xyxy: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    conf: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))
    cls: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    track_id: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        self.conf = np.asarray(self.conf, dtype=np.float32).reshape(-1)
        self.cls = np.asarray(self.cls, dtype=np.int32).reshape(-1)
        n = len(self.xyxy)
        if len(self.conf) != n or len(self.cls) != n:
            raise ValueError(f"Detections: xyxy has {n} rows, conf {len(self.conf)}, cls {len(self.cls)}")
        if self.track_id is not None:
            self.track_id = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
            if len(self.track_id) != n:
                raise ValueError("Detections: track_id length differs from xyxy")

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> "Detections":
        return cls()

    def __getitem__(self, idx: Any) -> "Detections":
        return Detections(
            self.xyxy[idx],
            self.conf[idx],
            self.cls[idx],
            None if self.track_id is None else self.track_id[idx],
        )

    @property
    def xywh(self) -> np.ndarray:
        """Centre x, centre y, width, height."""
        out = np.empty_like(self.xyxy)
        out[:, 0] = (self.xyxy[:, 0] + self.xyxy[:, 2]) / 2
        out[:, 1] = (self.xyxy[:, 1] + self.xyxy[:, 3]) / 2
        out[:, 2] = self.xyxy[:, 2] - self.xyxy[:, 0]
        out[:, 3] = self.xyxy[:, 3] - self.xyxy[:, 1]
        return out

    @classmethod
    def from_ultralytics(cls, result: Any) -> "Detections":
        """Build from one ``ultralytics.engine.results.Results``."""
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return cls.empty()
        ids = boxes.id
        return cls(
            boxes.xyxy.cpu().numpy(),
            boxes.conf.cpu().numpy(),
            boxes.cls.cpu().numpy().astype(np.int32),
            None if ids is None else ids.cpu().numpy().astype(np.int64),
        )


@dataclass(slots=True)
class Crop:
    """A cut-out of one tracked box, kept by the tracklet builder for re-ID."""

    frame: int
    ts: float
    xyxy: tuple[float, float, float, float]
    image: np.ndarray  # hxwx3 uint8 BGR
    quality: float  # 0..1, higher is better


@dataclass(slots=True)
class BoxRecord:
    """One box of a tracklet: where the track was in one frame."""

    frame: int
    ts: float
    xyxy: tuple[float, float, float, float]
    conf: float
    cls: int


@dataclass(slots=True)
class Tracklet:
    """A contiguous piece of one per-camera track, closed and ready to embed/match.

    ``segment`` counts the pieces of a long-lived track emitted periodically (0 first).
    ``reason`` says why it was closed: ``lost`` (track not seen for N frames),
    ``end`` (source finished or daemon stopping), ``periodic`` (long track, still open) or
    ``evicted`` (more open tracks in the camera than ``tracklets.max_open_tracks``: the least recently seen).
    """

    camera_id: str
    local_id: int
    segment: int
    boxes: list[BoxRecord]
    crops: list[Crop]
    reason: str
    cls: int  # majority class over the boxes
    # Live sources: a tag of this run of the daemon (its start time), because the tracker's local ids start
    # again at 1 after a restart and must not take over the previous run's tracklets (gallery entries, event
    # ids). Files: the recording's tag (reidd.sources.identity), so a file gives the same ids at every run
    # (deterministic replay, restart dedupe) and two recordings of one camera never share ids.
    session: str = ""

    @property
    def tracklet_id(self) -> str:
        if self.session:
            return f"{self.camera_id}:{self.session}-{self.local_id}:{self.segment}"
        return f"{self.camera_id}:{self.local_id}:{self.segment}"

    @property
    def first_frame(self) -> int:
        return self.boxes[0].frame

    @property
    def last_frame(self) -> int:
        return self.boxes[-1].frame

    @property
    def first_ts(self) -> float:
        return self.boxes[0].ts

    @property
    def last_ts(self) -> float:
        return self.boxes[-1].ts

    def to_record(self) -> dict[str, Any]:
        """JSON-serialisable summary (no pixels), the JSONL line ``replay`` writes."""
        return {
            "tracklet_id": self.tracklet_id,
            "camera_id": self.camera_id,
            "local_id": self.local_id,
            "segment": self.segment,
            "reason": self.reason,
            "cls": self.cls,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "first_ts": round(self.first_ts, 6),
            "last_ts": round(self.last_ts, 6),
            "num_boxes": len(self.boxes),
            "num_crops": len(self.crops),
            "boxes": [
                [b.frame, round(b.ts, 6), *(round(float(v), 2) for v in b.xyxy), round(b.conf, 4)]
                for b in self.boxes
            ],
        }


@dataclass(slots=True)
class TrackletEmbedding:
    """A tracklet with its pooled, L2-normalised appearance vector."""

    tracklet: Tracklet
    embedding: np.ndarray  # (D,) float32, unit norm
    crop_count: int
    colour: np.ndarray | None = None  # hue-saturation signature of the crops (reidd.reid.colour)


@dataclass(frozen=True, slots=True)
class CameraProgress:
    """How far one camera's tracklets have reached the re-ID stage, for early decisions (reidd.match.matcher):
    every tracklet of the camera that is not yet handed over is either one of ``open`` or ends after ``ts``."""

    ts: float  # time of the camera's latest processed frame; inf once its source ended (nothing more comes)
    open: tuple[tuple[float, float], ...] = ()  # (first_ts, last_ts so far) of its tracklets not handed over yet


#: per camera id; a camera missing from it is one whose progress is unknown (nothing can be decided early
#: against it)
Progress = dict[str, CameraProgress]


@dataclass(slots=True)
class Match:
    """A decision that a new tracklet is the same vehicle as a gallery entry."""

    query_id: str  # tracklet id of the new tracklet
    query_camera: str
    gallery_id: str  # tracklet id of the matched gallery entry
    gallery_camera: str
    similarity: float
    transit_s: float
    global_id: int
    gallery_first_ts: float  # the matched entry's times (the match event carries them)
    gallery_last_ts: float


@dataclass(slots=True)
class Event:
    """One message for the outside world.

    Contract: the payload's fields are a public interface (consumers read them from the Redis Stream,
    Pub/Sub and JSONL): reidd/events/event_schema.json is their schema, docs/events.md describes them
    and ``reidd.events.schema.validate_event`` (used by the tests) checks events against the schema.
    Change the three together, and only by adding fields."""

    event_id: str  # stable: the same input gives the same id, so redelivery is detectable
    type: str  # "tracklet" | "match"
    payload: dict[str, Any]
