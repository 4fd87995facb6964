"""reidd.track.tracklets: the tracklet builder bounds its crops and splits segments."""

from __future__ import annotations

import collections

import numpy as np

from reidd.config import TrackletConfig
from reidd.track.tracklets import TrackletBuilder
from reidd.types import Detections, Frame


def _frame(i: int, img: np.ndarray) -> Frame:
    return Frame("cam", i, i / 10.0, img)


def test_tracklet_builder_bounds_crops_and_segments() -> None:
    cfg = TrackletConfig(max_crops=3, lost_frames=5, max_frames=20, min_boxes=3, min_crop_size=8)
    b = TrackletBuilder("cam", cfg)
    rng = np.random.default_rng(0)
    closed = []
    for i in range(50):  # track 1 lives 50 frames (-> periodic segments), track 2 the first 4 frames only
        img = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        boxes, ids = [[10 + i, 20, 50 + i, 60]], [1]
        if i < 4:
            boxes.append([100, 10, 140, 50])
            ids.append(2)
        d = Detections(np.array(boxes, np.float32), np.full(len(ids), 0.9), np.full(len(ids), 2), np.array(ids))
        closed += b.update(_frame(i, img), d)
        assert all(len(st.heap) <= 3 for st in b._open.values())
    closed += b.flush()
    by = collections.defaultdict(list)
    for t in closed:
        by[t.local_id].append(t)
    assert [t.reason for t in by[1]] == ["periodic", "periodic", "end"]
    assert [t.segment for t in by[1]] == [0, 1, 2]
    assert [len(t.boxes) for t in by[1]] == [20, 20, 10]
    assert by[2][0].reason == "lost" and len(by[2][0].boxes) == 4 and by[2][0].last_frame == 3
    for t in closed:
        assert 1 <= len(t.crops) <= 3
        qs = [c.quality for c in t.crops]
        assert qs == sorted(qs, reverse=True)  # best first
        assert all(c.image.base is None or c.image.flags["OWNDATA"] for c in t.crops)  # copies, not frame views
    # too-short tracks are dropped and counted
    b2 = TrackletBuilder("cam", cfg)
    img = np.zeros((120, 160, 3), np.uint8)
    for i in range(2):
        b2.update(_frame(i, img), Detections(np.array([[0, 0, 30, 30]]), [0.9], [2], [7]))
    assert b2.flush() == [] and b2.dropped_short == 1


def test_static_low_confidence_tracks_are_dropped_and_confident_parked_ones_kept() -> None:
    """A box that stays put with a half-believed confidence (a shadow, a patch of road) is no vehicle; the same box
    detected confidently (a parked car) stays, and so does a moving track of the same low confidence."""
    cfg = TrackletConfig(min_boxes=3, static_speed=0.3, static_min_conf=0.5)
    img = np.zeros((240, 320, 3), np.uint8)

    def run(conf: float, dx: float) -> tuple[list, TrackletBuilder]:
        b = TrackletBuilder("cam", cfg)
        for i in range(20):  # 2 s at 10 frames/s, box 40 px tall
            b.update(_frame(i, img), Detections(np.array([[10 + dx * i, 100, 50 + dx * i, 140]]), [conf], [2], [1]))
        return b.flush(), b

    out, b = run(0.3, 0.0)
    assert out == [] and b.dropped_static == 1
    assert len(run(0.9, 0.0)[0]) == 1  # parked, confidently seen
    assert len(run(0.3, 4.0)[0]) == 1  # 40 px/s = 1 box height per second: moving
    off = TrackletBuilder("cam", TrackletConfig(min_boxes=3, static_min_conf=0.0))
    for i in range(20):
        off.update(_frame(i, img), Detections(np.array([[10, 100, 50, 140]]), [0.3], [2], [1]))
    assert len(off.flush()) == 1 and off.dropped_static == 0


def _det(box: list[float], tid: int) -> Detections:
    return Detections(np.array([box], np.float32), np.array([0.9]), np.array([2]), np.array([tid]))


def test_a_track_that_left_at_the_edge_closes_after_exit_frames_and_goes_on_if_seen_again() -> None:
    cfg = TrackletConfig(lost_frames=30, exit_frames=5, min_boxes=3, min_crop_size=8)
    b = TrackletBuilder("cam", cfg)
    img = np.zeros((120, 160, 3), np.uint8)
    closed, i = [], 0
    for x in (100, 110, 120, 130):  # track 1 drives out at the right edge (x2 reaches 160)
        closed += b.update(_frame(i, img), _det([x, 40, x + 30, 70], 1))
        i += 1
    for _ in range(3):  # track 2 stops in the middle and is lost there
        closed += b.update(_frame(i, img), _det([40, 40, 70, 70], 2))
        i += 1
    assert b.open_spans() == [(0.0, 0.3), (0.4, 0.6)]
    for _ in range(6):
        closed += b.update(_frame(i, img), Detections.empty())
        i += 1
    # at the edge: closed 5 frames after it was last seen, not 30; the one lost mid-frame stays open
    assert [(t.local_id, t.segment, t.reason, t.last_frame) for t in closed] == [(1, 0, "exit", 3)]
    assert b.open_spans() == [(0.4, 0.6)]
    for x in (128, 125, 120):  # the tracker finds track 1 again: it goes on as its next segment
        closed += b.update(_frame(i, img), _det([x, 40, x + 30, 70], 1))
        i += 1
    closed += b.flush()
    assert [(t.local_id, t.segment, t.reason) for t in closed[1:]] == [(1, 1, "end"), (2, 0, "end")]
    assert b.last_ts == (i - 1) / 10.0


def test_a_track_coming_in_at_the_edge_is_not_closed_as_leaving_when_it_flickers_there() -> None:
    cfg = TrackletConfig(lost_frames=30, exit_frames=5, min_boxes=3, min_crop_size=8)
    b = TrackletBuilder("cam", cfg)
    img = np.zeros((120, 160, 3), np.uint8)
    closed, i = [], 0
    for x in (0, 0, 2):  # enters at the left edge, still cut by it
        closed += b.update(_frame(i, img), _det([x, 40, x + 30, 70], 1))
        i += 1
    for _ in range(8):  # the detector misses it for a while, there
        closed += b.update(_frame(i, img), Detections.empty())
        i += 1
    assert closed == [] and b.open_spans() == [(0.0, 0.2)]  # still open: it has not left
    for x in (6, 12, 18):  # found again: the same tracklet goes on
        closed += b.update(_frame(i, img), _det([x, 40, x + 30, 70], 1))
        i += 1
    closed += b.flush()
    assert [(t.local_id, t.segment, len(t.boxes)) for t in closed] == [(1, 0, 6)]
