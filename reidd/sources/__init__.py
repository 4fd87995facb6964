"""Camera sources: per-camera reader threads for video files, RTSP and HTTP streams (reconnect, back-off)."""

from reidd.sources.reader import CameraReader, SourceEnd, SourceState, SourceStats, redact_url

__all__ = ["CameraReader", "SourceEnd", "SourceState", "SourceStats", "redact_url"]
