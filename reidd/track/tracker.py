"""Adapter over ultralytics' ByteTrack / BoT-SORT with the one-method contract ``update(dets, image)``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from reidd.config import TrackerConfig
from reidd.types import Detections


class CameraTracker:
    """One tracker per camera. ``update`` returns the confirmed tracks matched in this frame, with
    ``track_id`` set, each with the box, confidence and class of the detection it was matched to."""

    def __init__(self, cfg: TrackerConfig):
        from ultralytics.trackers.bot_sort import BOTSORT
        from ultralytics.trackers.byte_tracker import BYTETracker

        args = SimpleNamespace(
            tracker_type=cfg.type,
            track_high_thresh=cfg.track_high_thresh,
            track_low_thresh=cfg.track_low_thresh,
            new_track_thresh=cfg.new_track_thresh,
            track_buffer=cfg.track_buffer,
            match_thresh=cfg.match_thresh,
            fuse_score=cfg.fuse_score,
            gmc_method=cfg.gmc_method,
            proximity_thresh=cfg.proximity_thresh,
            appearance_thresh=cfg.appearance_thresh,
            with_reid=False,
            model="auto",
            device="cpu",
        )
        self.cfg = cfg
        self._impl = BOTSORT(args) if cfg.type == "botsort" else BYTETracker(args)

    def update(self, dets: Detections, image: np.ndarray) -> Detections:
        """Feed one frame's detections (in frame order); get the tracked boxes back."""
        out = self._impl.update(dets, image)
        if len(out) == 0:
            return Detections(track_id=np.zeros((0,), np.int64))
        out = out[np.argsort(out[:, 4], kind="stable")]  # by track id: deterministic downstream order
        # Report the matched detection's box, not the Kalman state: the filter adapts a box's aspect
        # ratio slowly, so a track born on a vehicle cut by the frame edge would lag for many frames.
        idx = out[:, 7].astype(np.int64)
        return Detections(dets.xyxy[idx], dets.conf[idx], dets.cls[idx], out[:, 4].astype(np.int64))

    def active_count(self) -> int:
        return len(self._impl.tracked_stracks)
