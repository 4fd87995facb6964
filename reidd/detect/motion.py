"""Background-subtraction detector for fixed cameras (and the offline demo).

MOG2 foreground mask -> threshold -> morphological open/close -> external contours ->
boxes filtered by area and aspect ratio. One background model per camera.
Confidence is the share of the box covered by foreground (0..1), so weak, ragged blobs
score lower. Every box is reported as class 2 (car): motion cannot tell vehicle types apart.
"""

from __future__ import annotations

import cv2
import numpy as np

from reidd.config import DetectorConfig
from reidd.detect.geometry import cover
from reidd.types import MOTION_ONLY, Detections, Frame


class Backgrounds:
    """One MOG2 background model per camera. :meth:`foreground` learns from a frame and returns its foreground
    mask (0 or 255, opened with an elliptic ``kernel``); :attr:`seen` counts each camera's frames."""

    def __init__(self, history: int, var_threshold: float, learning_rate: float, kernel: int):
        self.history, self.var_threshold, self.learning_rate = history, var_threshold, learning_rate
        k = max(1, kernel)
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        self._bg: dict[str, cv2.BackgroundSubtractorMOG2] = {}
        self.seen: dict[str, int] = {}

    def foreground(self, camera_id: str, image: np.ndarray) -> np.ndarray:
        sub = self._bg.get(camera_id)
        if sub is None:
            sub = self._bg[camera_id] = cv2.createBackgroundSubtractorMOG2(
                history=self.history, varThreshold=self.var_threshold, detectShadows=False)
            self.seen[camera_id] = 0
        mask = sub.apply(image, learningRate=self.learning_rate)
        self.seen[camera_id] += 1
        _, mask = cv2.threshold(mask, 127, 255, cv2.THRESH_BINARY)
        return cv2.morphologyEx(mask, cv2.MORPH_OPEN, self.kernel)

    def reset(self, camera_id: str) -> None:
        self._bg.pop(camera_id, None)
        self.seen.pop(camera_id, None)


class MotionDetector:
    """Deterministic blob detector; state (the background model) is kept per camera."""

    name = "motion"

    def __init__(self, cfg: DetectorConfig, camera_ids: list[str] | None = None):
        self.cfg = cfg
        self.m = cfg.motion
        self.bg = Backgrounds(self.m.history, self.m.var_threshold, self.m.learning_rate, self.m.kernel)

    def detect_one(self, frame: Frame) -> Detections:
        mask = self.bg.foreground(frame.camera_id, frame.image)
        if self.bg.seen[frame.camera_id] <= self.m.warmup_frames:
            return Detections.empty()
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self.bg.kernel, iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        h, w = mask.shape[:2]
        max_area = self.m.max_area_frac * h * w
        boxes, confs = [], []
        for c in contours:
            x, y, bw, bh = cv2.boundingRect(c)
            area = bw * bh
            if area < self.m.min_area or area > max_area:
                continue
            aspect = bw / max(bh, 1)
            if not (self.m.min_aspect <= aspect <= self.m.max_aspect):
                continue
            fill = float(cv2.countNonZero(mask[y : y + bh, x : x + bw])) / area
            conf = min(1.0, 0.5 + fill / 2)
            if conf < self.cfg.conf:
                continue
            boxes.append((x, y, x + bw, y + bh))
            confs.append(conf)
        if not boxes:
            return Detections.empty()
        order = np.lexsort((np.asarray(boxes)[:, 1], np.asarray(boxes)[:, 0]))  # deterministic order
        xyxy = np.asarray(boxes, np.float32)[order]
        return Detections(xyxy, np.asarray(confs, np.float32)[order], np.full(len(boxes), 2, np.int32))

    def detect(self, frames: list[Frame]) -> list[Detections]:
        return [self.detect_one(f) for f in frames]

    def reset(self, camera_id: str) -> None:
        """Forget a camera's background (e.g. after a reconnect)."""
        self.bg.reset(camera_id)


class MotionAssisted:
    """A model detector with background subtraction beside it, for fixed cameras (``detector.motion_assist``).

    A moving blob that no model box explains (neither covers half of the other) is added as a box of
    confidence ``detector.motion_assist_conf`` and class :data:`~reidd.types.MOTION_ONLY`: below the tracker's
    start threshold it only continues a track the model started, through the frames where the model lost the
    vehicle (ByteTrack's second association); at or above it, it can start one. A track that no model box ever
    joins is dropped by the tracklet builder (a shadow, leaves in the wind, the edge of a shaking picture)."""

    def __init__(self, model, cfg: DetectorConfig, camera_ids: list[str] | None = None):
        self.model = model
        self.name = f"{model.name}+motion"
        self.cfg = cfg
        self.motion = MotionDetector(cfg, camera_ids)

    def detect(self, frames: list[Frame]) -> list[Detections]:
        out = []
        for f, d in zip(frames, self.model.detect(frames)):
            m = self.motion.detect_one(f)
            if len(m) and len(d):
                explained = ((cover(m.xyxy, d.xyxy) >= 0.5) | (cover(d.xyxy, m.xyxy).T >= 0.5)).any(axis=1)
                m = m[~explained]
            if len(m):
                d = Detections(np.vstack([d.xyxy, m.xyxy]),
                               np.concatenate([d.conf, np.full(len(m), self.cfg.motion_assist_conf, np.float32)]),
                               np.concatenate([d.cls, np.full(len(m), MOTION_ONLY, np.int32)]))
            out.append(d)
        return out
