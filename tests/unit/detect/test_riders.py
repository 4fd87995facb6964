"""Riders: person boxes on two-wheelers become motorcycles; lone persons count only if they move like vehicles."""

from __future__ import annotations

import numpy as np

from reidd.config import TrackletConfig
from reidd.detect.riders import fuse_riders
from reidd.track.tracklets import TrackletBuilder, track_speed
from reidd.types import BoxRecord, Detections, Frame


def test_person_on_a_motorbike_becomes_one_motorcycle_box() -> None:
    dets = Detections(
        [[100, 50, 140, 130],   # rider (person)
         [95, 100, 150, 160],   # the motorbike under them
         [400, 60, 440, 150],   # a lone person
         [600, 100, 700, 160],  # a car
         [800, 100, 850, 160]],  # a motorbike without rider
        [0.8, 0.3, 0.7, 0.9, 0.6], [0, 3, 0, 2, 3])
    out = fuse_riders(dets)
    rows = sorted(zip(out.xyxy.tolist(), out.conf.tolist(), out.cls.tolist()))
    assert len(out) == 4
    assert ([95.0, 50.0, 150.0, 160.0], 0.800000011920929, 3) in rows  # union of rider and bike, best confidence
    assert any(c == 0 and b == [400, 60, 440, 150] for b, _, c in rows)  # lone person kept (decided per track)
    assert any(c == 2 for _, _, c in rows) and any(c == 3 and b[0] == 800 for b, _, c in rows)
    # nothing to fuse: unchanged
    only_cars = Detections([[0, 0, 10, 10]], [0.9], [2])
    assert fuse_riders(only_cars) is only_cars


def test_two_riders_do_not_share_one_motorbike() -> None:
    # side by side: the bike box under the first rider reaches the second, whose own bike was missed
    dets = Detections([[100, 50, 140, 130], [138, 55, 178, 135], [95, 100, 150, 160]], [0.9, 0.5, 0.4], [0, 0, 3])
    out = fuse_riders(dets)
    assert sorted(out.cls.tolist()) == [0, 3]  # the more confident rider took the bike, the other stays lone


def _feed(builder: TrackletBuilder, xs: list[float], cls: int) -> list:
    img = np.zeros((540, 960, 3), np.uint8)
    closed = []
    for i, x in enumerate(xs):
        tracks = Detections([[x, 200, x + 40, 280]], [0.8], [cls], [1])
        closed += builder.update(Frame("c1", i, i / 10, img), tracks)
    return closed + builder.flush()


def test_lone_person_tracks_are_riders_only_when_fast() -> None:
    cfg = TrackletConfig(min_rider_speed=1.0)
    fast = TrackletBuilder("c1", cfg)
    (t,) = _feed(fast, [100 + 20 * i for i in range(20)], 0)  # 200 px/s, box 80 px tall: 2.5 heights/s
    assert t.cls == 3 and all(b.cls == 3 for b in t.boxes)
    walker = TrackletBuilder("c1", cfg)
    assert _feed(walker, [100 + 3 * i for i in range(20)], 0) == []  # 30 px/s: a pedestrian
    assert walker.dropped_pedestrians == 1
    car = TrackletBuilder("c1", cfg)
    (t,) = _feed(car, [100.0] * 20, 2)  # a parked car is still a car
    assert t.cls == 2
    assert track_speed(t.boxes) == 0.0
    assert track_speed([BoxRecord(0, 0.0, (0, 0, 10, 10), 1.0, 0)]) == 0.0


def test_a_passenger_joins_the_two_wheeler_its_rider_claimed() -> None:
    """Two persons on one motorbike (rider and passenger) are one vehicle: one class-3 box, their union, no
    person box left beside it; a person on another bike makes a second box."""
    dets = Detections([[100, 40, 130, 110],   # rider
                       [112, 30, 142, 105],   # passenger behind, less confident
                       [95, 80, 150, 140],    # the motorbike under both
                       [400, 40, 430, 110],   # another rider
                       [395, 80, 445, 140]],  # on another motorbike
                      [0.9, 0.6, 0.5, 0.8, 0.4], [0, 0, 3, 0, 3])
    out = fuse_riders(dets)
    assert sorted(out.cls.tolist()) == [3, 3]
    rows = sorted(tuple(np.round(b).astype(int).tolist()) for b in out.xyxy)
    assert rows == [(95, 30, 150, 140), (395, 40, 445, 140)]
    assert np.allclose(sorted(out.conf.tolist()), [0.8, 0.9])
