"""Per-camera tracking (ultralytics ByteTrack / BoT-SORT) and the tracklet builder."""

from reidd.track.tracker import CameraTracker
from reidd.track.tracklets import TrackletBuilder

__all__ = ["CameraTracker", "TrackletBuilder"]
