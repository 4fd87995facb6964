"""Ultralytics YOLO detector: any model ultralytics loads (.pt, .onnx, OpenVINO folder, TensorRT engine)."""

from __future__ import annotations

import logging

from reidd.config import DetectorConfig
from reidd.detect.base import DetectorLoadError
from reidd.detect.riders import BICYCLE, MOTORCYCLE, PERSON, fuse_riders
from reidd.device import resolve_device, set_cpu_threads
from reidd.types import Detections, Frame

log = logging.getLogger("reidd.detect")


class YoloDetector:
    """Runs one ultralytics model over frames from all cameras, batching up to ``max_batch`` per call."""

    name = "yolo"

    def __init__(self, cfg: DetectorConfig):
        from ultralytics import YOLO

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        try:
            self.model = YOLO(cfg.model, task="detect")
        except Exception as exc:  # ultralytics raises many types (FileNotFoundError, ConnectionError, ...)
            hint = ""
            if cfg.model.endswith(".pt") and "/" not in cfg.model:
                hint = " (ultralytics downloads named weights; without internet point detector.model at a local file)"
            raise DetectorLoadError(f"detector.model: cannot load '{cfg.model}': {exc}{hint}") from exc
        self._warm = False
        kept = list(cfg.classes) or None
        self._riders = cfg.riders and kept is not None and MOTORCYCLE in kept and PERSON not in kept
        self._classes = sorted({*kept, PERSON}) if self._riders else kept
        self._two_wheelers = tuple(c for c in (MOTORCYCLE, BICYCLE) if kept and c in kept)
        self._torch_backend = cfg.model.endswith(".pt")

    def _predict(self, images: list) -> list:
        return self.model.predict(
            images,
            imgsz=self.cfg.imgsz,
            conf=self.cfg.conf,
            iou=self.cfg.iou,
            classes=self._classes,
            device=self.device,
            half=self.cfg.half and self.device.startswith("cuda"),
            verbose=False,
        )

    def detect(self, frames: list[Frame]) -> list[Detections]:
        out: list[Detections] = []
        step = self.cfg.max_batch
        for i in range(0, len(frames), step):
            chunk = frames[i : i + step]
            results = self._predict([f.image for f in chunk])
            if not self._warm:
                # Ultralytics pins torch to one thread after the first predict. A PyTorch model computes in
                # torch: give it every core. An exported model (ONNX, OpenVINO, TensorRT) runs in its own
                # runtime's threads and torch only pre/post-processes: one torch thread, or the two fight
                # over the cores (measured: 14.5 -> 18.1 frames/s with OpenVINO on 2 cores).
                set_cpu_threads(None if self._torch_backend else 1)
                self._warm = True
            dets = (Detections.from_ultralytics(r) for r in results)
            out.extend(fuse_riders(d, self._two_wheelers) if self._riders else d for d in dets)
        return out
