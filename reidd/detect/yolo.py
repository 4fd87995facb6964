"""Ultralytics YOLO detector: any model ultralytics loads (.pt, .onnx, OpenVINO folder, TensorRT engine)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from reidd.config import DetectorConfig
from reidd.detect.base import DetectorLoadError, one_line
from reidd.detect.geometry import merge_tiles, tile_layout
from reidd.detect.riders import RiderPolicy
from reidd.device import resolve_device, set_cpu_threads
from reidd.types import Detections, Frame

log = logging.getLogger("reidd.detect")


class YoloDetector:
    """Runs one ultralytics model over frames from all cameras, batching up to ``max_batch`` per call."""

    name = "yolo"

    def __init__(self, cfg: DetectorConfig, camera_ids: list[str] | None = None):
        from ultralytics import YOLO

        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self._torch_backend = cfg.model.endswith(".pt")
        if self._torch_backend:
            _guard_pickle(cfg)
        try:
            self.model = YOLO(cfg.model, task="detect")
        except Exception as exc:  # ultralytics raises many types (FileNotFoundError, ConnectionError, ...)
            hint = ""
            if self._torch_backend and not cfg.trust_pickle and Path(cfg.model).is_file():
                hint = (" (a .pt is a pickle that can run code: only ultralytics checkpoints of known model classes are "
                        "loaded; for a legacy checkpoint you trust, set detector.trust_pickle: true)")
            elif cfg.model.endswith(".pt") and "/" not in cfg.model:
                hint = " (ultralytics downloads named weights; without internet point detector.model at a local file)"
            raise DetectorLoadError(f"detector.model: cannot load '{cfg.model}': {one_line(exc)}{hint}") from exc
        self._warm = False
        self._riders = RiderPolicy(list(cfg.classes) or None, cfg.riders, tuple(cfg.rider_grow))
        # fp16 on CUDA: 'quantize=16' (ultralytics >= 8.4; 'half' is its deprecated spelling). Nothing on CPU.
        self._precision = {"quantize": 16} if cfg.half and self.device.startswith("cuda") else {}
        self._predictor = _predictor_without_warmup() if self.device == "cpu" else None
        self._call_batch = cfg.max_batch
        self._warm_up()

    def _warm_up(self) -> None:
        """One prediction on a blank frame before any camera opens: exported models are only read and compiled
        at their first call, so a junk .onnx or a broken OpenVINO folder fails here, as a start-up error."""
        blank = np.zeros((min(self.cfg.imgsz, 640), min(self.cfg.imgsz, 640), 3), np.uint8)
        try:
            self.detect([Frame(camera_id="warm-up", index=0, ts=0.0, image=blank)])
        except Exception as exc:
            raise DetectorLoadError(
                f"detector.model: '{self.cfg.model}' loads but cannot run: {one_line(exc)}") from exc

    def _predict(self, images: list) -> list:
        return self.model.predict(
            images,
            imgsz=self.cfg.imgsz,
            conf=self.cfg.conf,
            iou=self.cfg.iou,
            classes=self._riders.classes,
            device=self.device,
            verbose=False,
            predictor=self._predictor,
            **self._precision,
        )

    def tiles_for(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The frame regions the model sees (:func:`reidd.detect.geometry.tile_layout` at imgsz)."""
        return tile_layout(width, height, self.cfg.tiles, self.cfg.tile_overlap, self.cfg.imgsz)

    def detect(self, frames: list[Frame]) -> list[Detections]:
        jobs: list[tuple[int, tuple[int, int, int, int]]] = []  # (frame index, tile)
        images = []
        for fi, f in enumerate(frames):
            h, w = f.image.shape[:2]
            for tile in self.tiles_for(w, h):
                jobs.append((fi, tile))
                x0, y0, x1, y1 = tile
                images.append(f.image if (x1 - x0, y1 - y0) == (w, h) else np.ascontiguousarray(f.image[y0:y1, x0:x1]))
        parts: list[list[tuple[Detections, tuple[int, int, int, int]]]] = [[] for _ in frames]
        for i in range(0, len(images), self._call_batch):
            step = self._call_batch
            results = self._predict(images[i : i + step])
            if not self._warm:
                # Ultralytics pins torch to one thread after the first predict. A PyTorch model computes in
                # torch: give it every core. An exported model (ONNX, OpenVINO, TensorRT) runs in its own
                # runtime's threads and torch only pre/post-processes: one torch thread, or the two fight
                # over the cores (measured: 14.5 -> 18.1 frames/s with OpenVINO on 2 cores).
                set_cpu_threads(None if self._torch_backend else 1)
                self._call_batch = _frames_per_call(self.model, self.cfg.max_batch)
                self._warm = True
            for (fi, tile), r in zip(jobs[i : i + step], results):
                parts[fi].append((Detections.from_ultralytics(r), tile))
        out: list[Detections] = []
        for f, pieces in zip(frames, parts):
            h, w = f.image.shape[:2]
            d = pieces[0][0] if len(pieces) == 1 else merge_tiles(pieces, w, h, self.cfg.iou)
            out.append(self._riders.apply(d, w, h))
        return out


def _frames_per_call(model, max_batch: int) -> int:
    """Images per predict call: ``max_batch``, or the export's own batch size when the model was exported with
    a fixed one (most ONNX and OpenVINO exports: batch 1). Ultralytics runs those one export batch at a time
    anyway, but pre-processes the whole call at once: a 6-frame call on a batch-1 OpenVINO model holds 6
    letterboxed float tensors and costs about 120 MB more peak RSS for no speed (scripts/bench_replay.py
    --max-batch 1: 47 vs 44 frames/s)."""
    backend = getattr(getattr(model, "predictor", None), "model", None)
    fmt = getattr(backend, "format", "pt")
    metadata = getattr(backend, "metadata", None) or {}
    batch = getattr(backend, "batch", None)
    # the exports ultralytics splits into export-batch calls (AutoBackend.forward): fixed shape, not torch
    split = metadata.get("dynamic") is False and fmt not in {"pt", "torchscript", "ncnn", "deepx", "axelera",
                                                            "coreml", "imx"}
    if not split or not isinstance(batch, int) or batch < 1:
        return max_batch
    return max(1, min(max_batch, batch))


def _predictor_without_warmup() -> type:
    """Ultralytics' detection predictor without its warm-up, for CPU.

    On CPU the warm-up runs no forward pass for exported models; all it does is ``import torchvision`` so that
    NMS uses torchvision's kernel, and torchvision imports ``torch._dynamo`` and triton: ~150 MB resident per
    process, for an NMS over a few hundred boxes that ultralytics' own torch NMS does as well (the same boxes up
    to tie-breaks: tests/integration/test_detectors.py). On CUDA the warm-up also primes kernels, so it is kept."""
    from ultralytics.models.yolo.detect import DetectionPredictor

    class CpuPredictor(DetectionPredictor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.done_warmup = True

    return CpuPredictor


def _guard_pickle(cfg: DetectorConfig) -> None:
    """A ``.pt`` is a pickle: loaded as ultralytics does by default, it can run any code it names. Unless
    ``detector.trust_pickle`` is set, switch ultralytics to its restricted loader (``torch.load(weights_only=True)``
    against its allow-list of model classes; the documented ``ULTRALYTICS_SAFE_LOAD`` switch) and prove the file
    loads only that way."""
    from ultralytics.nn import tasks

    if cfg.trust_pickle:
        tasks.SAFE_LOAD = False
        log.warning("detector.trust_pickle: loading %s as a full pickle (it can run code: only for files you trust)",
                    cfg.model)
        return
    if not getattr(tasks, "_SafeLoad", None) or not tasks._SafeLoad.SUPPORTED:
        raise DetectorLoadError(
            "detector.model: this ultralytics/torch cannot load .pt files safely (needs torch >= 2.6); export the "
            "model to ONNX/OpenVINO, or set detector.trust_pickle: true for a file you trust")
    tasks.SAFE_LOAD = True  # YOLO()'s load is restricted (tests/integration/test_hostile.py proves a code-running pickle is refused)
