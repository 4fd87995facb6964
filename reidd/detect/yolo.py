"""Ultralytics YOLO detector: any model ultralytics loads (.pt, .onnx, OpenVINO folder, TensorRT engine)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from reidd.config import DetectorConfig
from reidd.detect.base import DetectorLoadError
from reidd.detect.riders import BICYCLE, MOTORCYCLE, PERSON, fuse_riders
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
            raise DetectorLoadError(f"detector.model: cannot load '{cfg.model}': {_one_line(exc)}{hint}") from exc
        self._warm = False
        kept = list(cfg.classes) or None
        self._riders = cfg.riders and kept is not None and MOTORCYCLE in kept and PERSON not in kept
        self._classes = sorted({*kept, PERSON}) if self._riders else kept
        self._two_wheelers = tuple(c for c in (MOTORCYCLE, BICYCLE) if kept and c in kept)
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
                f"detector.model: '{self.cfg.model}' loads but cannot run: {_one_line(exc)}") from exc

    def _predict(self, images: list) -> list:
        return self.model.predict(
            images,
            imgsz=self.cfg.imgsz,
            conf=self.cfg.conf,
            iou=self.cfg.iou,
            classes=self._classes,
            device=self.device,
            verbose=False,
            predictor=self._predictor,
            **self._precision,
        )

    def tiles_for(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The frame regions (x0, y0, x1, y1) the model sees: the whole frame, or ``detector.tiles`` columns
        overlapping by ``detector.tile_overlap`` pixels ("auto": one column per 1.25 x imgsz of width)."""
        n = self.cfg.tiles
        if n == "auto":
            n = min(4, max(1, math.ceil(width / (1.25 * self.cfg.imgsz))))
        n = int(n)
        if n <= 1 or width <= 2 * self.cfg.tile_overlap:
            return [(0, 0, width, height)]
        ov = self.cfg.tile_overlap
        step = (width - ov) / n
        return [(int(round(k * step)), 0, int(round(k * step + step + ov)) if k < n - 1 else width, height)
                for k in range(n)]

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
            if self._riders:
                d = fuse_riders(d, self._two_wheelers, grow=tuple(self.cfg.rider_grow))
                if len(d) and any(self.cfg.rider_grow):  # grown boxes stay inside the frame
                    d.xyxy[:, [0, 2]] = np.clip(d.xyxy[:, [0, 2]], 0, w)
                    d.xyxy[:, [1, 3]] = np.clip(d.xyxy[:, [1, 3]], 0, h)
            out.append(d)
        return out


def merge_tiles(pieces: list[tuple[Detections, tuple[int, int, int, int]]], width: int, height: int,
                iou: float, edge_px: float = 2.0) -> Detections:
    """One frame's detections from its overlapping tiles: boxes shifted to frame coordinates; a box that
    touches a tile's inner edge (cut by the tile, and whole in its neighbour thanks to the overlap) is
    dropped; duplicates in the overlaps are suppressed (IoU above ``iou``, or one box nearly inside the
    other), the more confident kept."""
    boxes, confs, classes = [], [], []
    for d, (x0, y0, x1, y1) in pieces:
        if not len(d):
            continue
        b = d.xyxy + np.array([x0, y0, x0, y0], np.float32)
        cut = np.zeros(len(b), bool)
        if x0 > 0:
            cut |= b[:, 0] <= x0 + edge_px
        if x1 < width:
            cut |= b[:, 2] >= x1 - edge_px
        boxes.append(b[~cut])
        confs.append(d.conf[~cut])
        classes.append(d.cls[~cut])
    if not boxes:
        return Detections()
    b, c, k = np.vstack(boxes), np.concatenate(confs), np.concatenate(classes)
    order = np.argsort(-c, kind="stable")
    b, c, k = b[order], c[order], k[order]
    area = np.clip((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1e-6, None)
    keep = np.ones(len(b), bool)
    for i in range(len(b)):
        if not keep[i]:
            continue
        j = np.arange(i + 1, len(b))
        j = j[keep[j] & (k[j] == k[i])]
        if not len(j):
            continue
        ix = np.clip(np.minimum(b[i, 2], b[j, 2]) - np.maximum(b[i, 0], b[j, 0]), 0, None)
        iy = np.clip(np.minimum(b[i, 3], b[j, 3]) - np.maximum(b[i, 1], b[j, 1]), 0, None)
        inter = ix * iy
        dup = (inter / (area[i] + area[j] - inter) > iou) | (inter / np.minimum(area[i], area[j]) > 0.8)
        keep[j[dup]] = False
    return Detections(b[keep], c[keep], k[keep])


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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


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
