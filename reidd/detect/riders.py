"""Riders: where two-wheelers dominate the traffic, COCO detectors see the rider, not the motorbike.

Seen from the front or the back, a motorbike is mostly hidden by its rider: a COCO model then reports
a ``person`` (class 0) with a confident box and a small or no ``motorcycle`` box (measured on the
realistic-scene benchmark: vehicle classes alone found 32 % of the vehicles, 51 % with riders fused,
68 % with lone riders kept too). With ``detector.riders`` the detector also asks for persons, and:

* a person box that overlaps a two-wheeler box (motorcycle, or bicycle when it is among the kept
  classes) becomes one box, their union, of class 3 (motorcycle) with the better confidence; a second
  person mostly inside that box (a passenger) joins it instead of staying a box of its own, while one
  mostly beside it (a neighbour whose own bike was missed) stays a lone rider;
* a lone person box is kept as class 0, grown to the extent of the two-wheeler it rides
  (``detector.rider_grow``: wider for the handlebars and mirrors, lower for the wheel); the tracklet
  builder later keeps such a track only when it moves like a vehicle (``tracklets.min_rider_speed``)
  and reports it as a motorcycle, so pedestrians do not become vehicles.
"""

from __future__ import annotations

import numpy as np

from reidd.detect.geometry import clip_to_frame, cover
from reidd.types import Detections

PERSON = 0
MOTORCYCLE = 3
BICYCLE = 1


def grow_lone_riders(dets: Detections, grow: tuple[float, float, float, float]) -> Detections:
    """Grow each person box by ``grow`` = (left, top, right, bottom) fractions of its width/height: a rider's
    box covers the rider, the two-wheeler under it is wider (handlebars, mirrors) and reaches lower (the
    wheel). Pedestrians grow too; the tracklet builder drops them by their speed."""
    if not any(grow) or not len(dets):
        return dets
    p = dets.cls == PERSON
    if not p.any():
        return dets
    xyxy = dets.xyxy.copy()
    w = xyxy[p, 2] - xyxy[p, 0]
    h = xyxy[p, 3] - xyxy[p, 1]
    xyxy[p, 0] -= grow[0] * w
    xyxy[p, 1] -= grow[1] * h
    xyxy[p, 2] += grow[2] * w
    xyxy[p, 3] += grow[3] * h
    return Detections(xyxy, dets.conf, dets.cls, dets.track_id)


def fuse_riders(dets: Detections, two_wheelers: tuple[int, ...] = (MOTORCYCLE,), min_cover: float = 0.2,
                grow: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)) -> Detections:
    """Merge each person with the two-wheeler boxes it rides (either covers ``min_cover`` of the other)
    into one class-3 box; two-wheelers without a rider stay as they are, and lone persons too, their
    boxes grown by ``grow`` (see :func:`grow_lone_riders`)."""
    if len(dets) == 0:
        return dets
    is_p = dets.cls == PERSON
    is_w = np.isin(dets.cls, two_wheelers)
    if not is_p.any() or not is_w.any():
        return grow_lone_riders(dets, grow)
    pi, wi = np.nonzero(is_p)[0], np.nonzero(is_w)[0]
    p, w = dets.xyxy[pi], dets.xyxy[wi]
    ov = (cover(p, w) >= min_cover) | (cover(w, p).T >= min_cover)  # (persons, wheels)
    owner = np.full(len(wi), -1)  # the group (one fused box) each two-wheeler went to
    groups: list[tuple[list[int], list[int]]] = []  # (persons, wheels) per fused box
    for k in np.argsort(-dets.conf[pi], kind="stable"):  # the most confident rider claims first
        free = ov[k] & (owner < 0)
        g = -1
        for t in dict.fromkeys(owner[ov[k] & (owner >= 0)].tolist()):  # bikes more confident riders took
            mates = np.vstack([p[groups[t][0]], w[groups[t][1]]])
            union = np.array([[mates[:, 0].min(), mates[:, 1].min(), mates[:, 2].max(), mates[:, 3].max()]])
            if cover(p[k : k + 1], union)[0, 0] >= 0.5:  # mostly inside that vehicle: its passenger
                g = t
                break
        if g < 0:
            if not free.any():
                continue  # beside a claimed bike, none of its own: a neighbour whose bike was missed (lone rider)
            g = len(groups)
            groups.append(([], []))
        owner[free] = g
        groups[g][0].append(int(k))
        groups[g][1].extend(np.nonzero(free)[0].tolist())
    keep = np.ones(len(dets), bool)
    xyxy, conf, cls = [], [], []
    for persons, wheels in groups:
        boxes = np.vstack([p[persons], w[wheels]])
        xyxy.append([boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max()])
        conf.append(max(float(dets.conf[pi[persons]].max()), float(dets.conf[wi[wheels]].max())))
        cls.append(MOTORCYCLE)
        keep[pi[persons]] = False
        keep[wi[wheels]] = False
    rest = grow_lone_riders(dets[keep], grow)
    if not xyxy:
        return rest
    return Detections(np.vstack([rest.xyxy, np.asarray(xyxy, np.float32)]),
                      np.concatenate([rest.conf, np.asarray(conf, np.float32)]),
                      np.concatenate([rest.cls, np.asarray(cls, np.int32)]))


class RiderPolicy:
    """What ``detector.riders`` means for a detector that reports COCO class ids: which classes to ask the model
    for (``classes``: the kept ones plus persons when riders are on; None = all) and how one frame's boxes are
    finished (:meth:`apply`: riders fused with their two-wheelers, lone riders grown, boxes kept in the frame).

    Riders are on when ``detector.riders`` is set, motorcycles are kept and persons are not asked for anyway."""

    def __init__(self, kept: list[int] | None, riders: bool, grow: tuple[float, float, float, float]):
        self.active = bool(riders and kept is not None and MOTORCYCLE in kept and PERSON not in kept)
        self.classes = sorted({*kept, PERSON}) if self.active and kept is not None else kept
        self.two_wheelers = tuple(c for c in (MOTORCYCLE, BICYCLE) if kept and c in kept)
        self.grow = tuple(grow)

    def apply(self, dets: Detections, width: int, height: int) -> Detections:
        if not self.active:
            return dets
        dets = fuse_riders(dets, self.two_wheelers, grow=self.grow)
        return clip_to_frame(dets, width, height) if any(self.grow) else dets  # grown boxes stay inside
