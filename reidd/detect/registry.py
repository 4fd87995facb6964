"""The one home of the detector types a config can name (``detector.type``).

Each entry maps the type to the class that implements it (``"module:Class"``, imported only when a
detector is built, so reading a config loads no model runtime) and a line for the config reference.
Every class is built as ``Class(cfg: DetectorConfig, camera_ids: list[str])`` and has
``detect(frames) -> list[Detections]`` (see :class:`reidd.detect.base.Detector`).

To add a detector: write its module in reidd/detect/ and add one entry here; ``detector.type`` accepts
it from then on. Options of its own go in :class:`reidd.config.DetectorConfig`.
"""

from __future__ import annotations

from typing import Literal

DETECTORS: dict[str, tuple[str, str]] = {
    "yolo": ("reidd.detect.yolo:YoloDetector", "ultralytics"),
    "openvino": ("reidd.detect.openvino:OpenVinoDetector",
                 "an OpenVINO IR detector such as Intel's Open Model Zoo person-vehicle-bike models; the recommended "
                 "CPU detector"),
    "motion": ("reidd.detect.motion:MotionDetector", "background subtraction, fixed cameras"),
    "file": ("reidd.detect.file:FileDetector",
             "precomputed MOTChallenge detection files, one <camera id>.txt per camera in detections_dir"),
}
#: The confidence at which a detector's boxes start and first-associate tracks (``tracker.new_track_thresh`` and
#: ``tracker.track_high_thresh``) where the config does not set them, for detectors whose confidences run lower
#: than YOLO's (the tracker's own default, 0.25). Realistic-scene benchmark, crossroad-1016, seeds 11-13: 0.25 ->
#: 0.15 raised IDF1 0.694 -> 0.744 and cross-camera agreement 0.639 -> 0.739.
TRACK_THRESH: dict[str, float] = {"openvino": 0.15}
#: The type of ``detector.type`` in the config schema.
DetectorType = Literal[tuple(DETECTORS)]  # type: ignore[valid-type]


def describe() -> str:
    """"'yolo' (ultralytics), 'motion' (...) or ..." for the config reference."""
    parts = [f"'{name}' ({about})" for name, (_, about) in DETECTORS.items()]
    return ", ".join(parts[:-1]) + " or " + parts[-1] if len(parts) > 1 else parts[0]
