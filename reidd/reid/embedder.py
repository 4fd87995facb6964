"""The daemon's embedder: one model for all cameras, batched crops, temporal pooling on the device.

Crops (uint8 BGR, any size) go to the device as they are; resize to the model's input size,
BGR->RGB and normalisation happen there, so from crop batch to pooled vector the tensors stay on
the model's device. Precision: fp16 autocast on CUDA, bf16 on CPUs with native bf16, else fp32
(``reid.precision``). channels_last on CUDA. On CPU (``reid.runtime: auto``) the model is exported
once to a temporary ONNX file, checked numerically against PyTorch, and run with onnxruntime.

:meth:`Embedder.embed_tracklets` is synchronous and deterministic (the batch composition depends
only on the tracklets given), which replay relies on. :class:`BatchingEmbedder` serves live
cameras: a thread collects tracklets from every camera until ``max_batch`` crops or
``max_wait_ms`` and embeds them together.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reidd.config import ReidConfig
from reidd.device import cpu_threads, release_freed_memory
from reidd.reid.colour import colour_signature
from reidd.telemetry import Metrics
from reidd.types import Tracklet, TrackletEmbedding

log = logging.getLogger("reidd.embedder")


def onnx_cpu_slice() -> int:
    """onnxruntime on CPU runs a batch in slices of this many crops: one per CPU thread, at least 2.

    Its memory arena keeps the largest slice's activations for good, and small slices are also the
    fastest on CPU (efficientnet_lite0 at 224x224 on 2 cores: 4.8 ms per crop and +90 MB in slices of
    2; 5.3 ms and +140 MB in slices of 4; 7.1 ms and +250 MB in slices of 8; 12 ms and +1.8 GB for a
    whole 64-crop batch; 8.4 ms one crop at a time)."""
    return max(2, cpu_threads())


class EmbedderError(RuntimeError):
    """The configured re-ID model cannot be used (message names the field and file)."""


# ReidConfig fields that a checkpoint (or exported .onnx) also stores, with their values when neither says.
SPEC_FIELDS = {"backbone": "efficientnet_lite0", "embedding_dim": None, "attention": False, "multi_level": False,
               "input_size": (224, 224)}


def expected_spec(cfg: ReidConfig):
    """The model the config asks for when there is no checkpoint: unset fields take their defaults."""
    from reidd.reid.model import ModelSpec

    values = {k: (getattr(cfg, k) if getattr(cfg, k) is not None else d) for k, d in SPEC_FIELDS.items()}
    values["input_size"] = tuple(values["input_size"])
    return ModelSpec(**values)


def spec_conflicts(cfg: ReidConfig, stored) -> list[str]:
    """Explicit config values that contradict a checkpoint's stored spec (unset fields never conflict)."""
    got = stored.architecture()
    out = []
    for key in SPEC_FIELDS:
        want = getattr(cfg, key)
        if want is None:
            continue
        want = tuple(want) if key == "input_size" else want
        if want != got[key]:
            out.append(f"reid.{key} is {want!r}, the checkpoint has {got[key]!r}")
    return out


def pool_groups(feats: torch.Tensor, owner: torch.Tensor, weights: torch.Tensor | None, groups: int) -> torch.Tensor:
    """Temporal pooling of many tracklets at once: row ``i`` of the result pools the crop features whose
    ``owner`` is ``i`` — the quality-weighted (or plain, when ``weights`` is None) mean of the
    L2-normalised rows, re-normalised. (groups, D); a group with no rows comes out as zeros."""
    f = F.normalize(feats.float(), dim=1)
    w = torch.ones(len(f), device=f.device) if weights is None else weights.float().clamp_min(0) + 1e-6
    sums = torch.zeros((groups, f.shape[1]), device=f.device).index_add_(0, owner, f * w[:, None])
    return F.normalize(sums, dim=1)


class TorchBackend:
    """A :class:`~reidd.reid.model.ReidModel` run by PyTorch on its device: autocast to ``dtype`` when it
    is not fp32, channels_last on CUDA."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype
        self.model = model.to(device).eval()
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.dim = int(model.embedding_dim)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            return self.model(x)
        with torch.autocast(device_type=self.device.type, dtype=self.dtype):
            return self.model(x)


class OnnxBackend:
    """An ONNX embedder run by onnxruntime on CPU, in slices of :func:`onnx_cpu_slice` crops. ``keep``
    holds what must outlive the session (the temporary folder of an exported model)."""

    name = "onnxruntime"
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, path: str | Path, input_size: tuple[int, int], keep: object = None):
        from reidd.reid.export import OnnxEmbedder

        self.session = OnnxEmbedder(path, providers=["CPUExecutionProvider"], threads=cpu_threads())
        self.keep = keep
        self.slice = onnx_cpu_slice()
        self.dim = int(self.session(np.zeros((1, 3, *input_size), np.float32)).shape[1])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xs, k = x.cpu().numpy(), self.slice
        return torch.from_numpy(np.concatenate([self.session(xs[j : j + k]) for j in range(0, len(xs), k)]))


class Embedder:
    """Loads the configured model once; embeds and pools tracklets.

    The model runs in one backend (:class:`TorchBackend` or :class:`OnnxBackend`, chosen by
    :meth:`_backend_for`); preprocessing, batching, flip averaging and pooling happen here, once."""

    def __init__(self, cfg: ReidConfig, metrics: Metrics | None = None):
        from reidd.reid.model import pick_device, pick_precision

        self.cfg = cfg
        self.metrics = metrics
        device = pick_device(cfg.device)
        self.backend: TorchBackend | OnnxBackend = self._backend_for(cfg, device, pick_precision(device, cfg.precision))
        h, w = self.spec.input_size
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self._size = (h, w)
        log.info("embedder: %s dim=%d on %s (%s, %s)%s", self.spec.backbone, self.dim, self.device,
                 self.backend.name, str(self.dtype).replace("torch.", ""),
                 f" weights={cfg.weights}" if cfg.weights else " ImageNet init")

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def dtype(self) -> torch.dtype:
        return self.backend.dtype

    @property
    def dim(self) -> int:
        return self.backend.dim

    def _backend_for(self, cfg: ReidConfig, device: torch.device, dtype: torch.dtype) -> TorchBackend | OnnxBackend:
        """The one place that decides how the model runs: an .onnx file in onnxruntime; a checkpoint or
        the ImageNet-initialised model in PyTorch, or exported to onnxruntime on CPU (``reid.runtime``)."""
        if cfg.weights and cfg.weights.endswith(".onnx"):
            try:
                return self._onnx_file(cfg.weights)
            except EmbedderError:
                raise
            except Exception as exc:  # protobuf, onnxruntime and spec errors: one start-up error naming the field
                detail = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise EmbedderError(f"reid.weights: {cfg.weights} is not a usable reidd ONNX model ({detail})") from exc
        model = self._torch_model(cfg, device)
        if self._use_onnxruntime(device):
            backend = self._export_for_cpu(model)
            if backend is not None:
                del model  # onnxruntime serves from here on
                release_freed_memory()  # what the export allocated would otherwise stay resident
                return backend
        return TorchBackend(model, device, dtype)

    def _torch_model(self, cfg: ReidConfig, device: torch.device) -> torch.nn.Module:
        from reidd.reid.model import build_model

        if cfg.weights:
            from reidd.reid.checkpoint import CheckpointMismatch, load_checkpoint

            try:
                model, meta = load_checkpoint(cfg.weights, map_location=device)
            except CheckpointMismatch as exc:
                raise EmbedderError(f"reid.weights: {exc}") from exc
            self.spec = meta["spec"]
            clash = spec_conflicts(cfg, self.spec)
            if clash:
                raise EmbedderError(f"reid.weights: {cfg.weights} does not fit the config: " + "; ".join(clash)
                                    + " (leave those fields unset to use the checkpoint's)")
            return model
        from reidd.reid.backbones import PretrainedUnavailable

        spec = expected_spec(cfg)
        try:
            model = build_model(spec, pretrained=True)
        except PretrainedUnavailable as exc:
            from reidd.reid.registry import BACKBONES

            if BACKBONES[spec.backbone].imagenet is None:  # a backbone trained from scratch has nothing to start from
                raise EmbedderError(
                    f"reid.backbone: '{spec.backbone}' has no ImageNet weights (it is trained from scratch): set "
                    f"reid.weights to a checkpoint trained with `reidd train --backbone {spec.backbone} "
                    "--pretrained none`, or use backbone efficientnet_lite0 (works offline)"
                ) from exc
            raise EmbedderError(
                f"reid.backbone: ImageNet weights for '{spec.backbone}' are not available here ({exc}); "
                "set reid.weights to a checkpoint or use backbone efficientnet_lite0 (works offline)"
            ) from exc
        self.spec = spec
        return model

    def _use_onnxruntime(self, device: torch.device) -> bool:
        if self.cfg.runtime == "torch" or (self.cfg.runtime == "auto" and device.type != "cpu"):
            return False
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:
            if self.cfg.runtime == "onnxruntime":
                raise EmbedderError("reid.runtime: onnxruntime is not installed (pip install onnxruntime)")
            return False
        return True

    def _export_for_cpu(self, model: torch.nn.Module) -> OnnxBackend | None:
        """Export the model to ONNX (verified against PyTorch) for onnxruntime; None when that fails."""
        import tempfile

        from reidd.reid.export import ExportError, export_model

        tmp = tempfile.TemporaryDirectory(prefix="reidd-embedder-")
        path = Path(tmp.name) / "embedder.onnx"
        try:
            info = export_model(model.cpu().eval(), path, "onnx")
        except (ExportError, RuntimeError) as exc:
            log.warning("embedder: ONNX export failed (%s); staying with PyTorch", exc)
            tmp.cleanup()
            return None
        backend = OnnxBackend(path, self.spec.input_size, keep=tmp)
        log.info("embedder: running on onnxruntime (CPU), max abs diff vs PyTorch %.2g", info["max_abs_diff"])
        return backend

    def _onnx_file(self, path: str) -> OnnxBackend:
        from reidd.reid.export import read_onnx_spec

        if not Path(path).is_file():
            raise EmbedderError(f"reid.weights: file not found: {path}")
        got = read_onnx_spec(path)
        clash = spec_conflicts(self.cfg, got)
        if clash:
            raise EmbedderError(f"reid.weights: {path} does not fit the config: " + "; ".join(clash)
                                + " (leave those fields unset to use the model's)")
        self.spec = got
        return OnnxBackend(path, got.input_size)

    # ------------------------------------------------------------------ core
    def _prepare(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 BGR crops of any size -> normalised (B, 3, H, W) float on the device."""
        out = []
        for c in crops:
            t = torch.from_numpy(np.ascontiguousarray(c)).to(self.device, non_blocking=True)
            t = t.permute(2, 0, 1).flip(0).unsqueeze(0).float()  # HWC BGR -> 1CHW RGB
            out.append(F.interpolate(t, size=self._size, mode="bilinear", align_corners=False, antialias=True))
        x = torch.cat(out)
        del out
        # in place: a 64-crop batch at 224x224 is 38 MB per copy
        return x.div_(255.0).sub_(self._mean).div_(self._std)

    @torch.inference_mode()
    def embed_crops(self, crops: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, D) L2-normalised features on the device, in ``max_batch`` chunks."""
        feats = []
        for i in range(0, len(crops), self.cfg.max_batch):
            chunk = crops[i : i + self.cfg.max_batch]
            t0 = time.perf_counter()
            x = self._prepare(chunk)
            if self.cfg.flip_average:  # the mirrored crop too, in the same batch (test-time augmentation)
                x = torch.cat([x, x.flip(3)])
            f = F.normalize(self.backend(x).float(), dim=1)
            if self.cfg.flip_average:
                f = F.normalize(f[: len(chunk)] + f[len(chunk):], dim=1)
            feats.append(f)
            if self.metrics is not None:
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)  # CUDA runs asynchronously: time the finished work
                dt = time.perf_counter() - t0
                self.metrics.embedder_latency.observe(dt)
                self.metrics.embedder_batch.observe(len(chunk))
                self.metrics.stage_seconds.labels(stage="embed").observe(dt)
        if not feats:
            return torch.zeros((0, self.dim), device=self.device)
        return torch.cat(feats)

    def embed_tracklets(self, tracklets: Sequence[Tracklet]) -> list[TrackletEmbedding | None]:
        """Pooled embedding per tracklet (None for a tracklet without crops), crops of all batched together."""
        crops, owner, quality = [], [], []
        for i, t in enumerate(tracklets):
            for c in t.crops:
                crops.append(c.image)
                owner.append(i)
                quality.append(c.quality)
        if not crops:
            return [None] * len(tracklets)
        feats = self.embed_crops(crops)
        owner_t = torch.tensor(owner, device=feats.device)
        w = torch.tensor(quality, device=feats.device) if self.cfg.pooling == "quality" else None
        pooled = pool_groups(feats, owner_t, w, len(tracklets)).cpu().numpy().astype(np.float32)  # one copy back
        return [TrackletEmbedding(t, pooled[i], len(t.crops),
                                  colour_signature([c.image for c in t.crops], [c.quality for c in t.crops]))
                if t.crops else None for i, t in enumerate(tracklets)]


class BatchingEmbedder:
    """Live mode: a worker thread batches tracklets from all cameras (``max_batch`` crops / ``max_wait_ms``).

    ``on_result(embeddings, tracklets, failed)`` receives every batch: ``failed`` is None, or the error that made
    its embedding fail (then every embedding is None: the tracklets still go on, unmatched, so no event is lost).
    """

    def __init__(self, embedder: Embedder,
                 on_result: Callable[[list[TrackletEmbedding | None], list[Tracklet], str | None], None],
                 max_pending: int = 10_000):
        self.embedder = embedder
        self.on_result = on_result
        self._q: queue.Queue[Tracklet | None] = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._loop, name="reidd-embedder", daemon=True)
        self._cv = threading.Condition()
        self._outstanding = 0  # submitted and not yet handed to on_result
        self.errors = 0  # batches whose embedding failed
        self.handoff_errors = 0  # batches whose on_result raised
        self.last_error: str | None = None
        self.last_error_mono: float | None = None  # time.monotonic() of the last failure

    def start(self) -> "BatchingEmbedder":
        self._thread.start()
        return self

    def submit(self, tracklets: Sequence[Tracklet]) -> None:
        for t in tracklets:
            with self._cv:
                self._outstanding += 1
            self._q.put(t)  # bounded: blocks the pipeline rather than dropping a tracklet

    def _loop(self) -> None:
        cfg = self.embedder.cfg
        while True:
            first = self._q.get()
            if first is None:
                return
            batch = [first]
            n = len(first.crops)
            deadline = time.monotonic() + cfg.max_wait_ms / 1000.0
            stop = False
            while n < cfg.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    t = self._q.get(timeout=left)
                except queue.Empty:
                    break
                if t is None:
                    stop = True
                    break
                batch.append(t)
                n += len(t.crops)
            failed = None
            try:
                embs = self.embedder.embed_tracklets(batch)
            except Exception as exc:  # keep serving; logged, counted, and the tracklets go on unmatched
                self.errors += 1
                failed = self.last_error = f"{type(exc).__name__}: {exc}"
                self.last_error_mono = time.monotonic()
                log.exception("embedding a batch of %d tracklets failed: they get new ids, unmatched", len(batch))
                embs = [None] * len(batch)
            try:
                self.on_result(embs, batch, failed)
            except Exception:
                self.handoff_errors += 1
                log.exception("handing %d embedded tracklets to the matcher failed", len(batch))
            with self._cv:
                self._outstanding -= len(batch)
                self._cv.notify_all()
            if stop:
                return

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted has been embedded (False: still busy after ``timeout``)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._outstanding == 0, timeout)

    def close(self, timeout: float = 30.0) -> bool:
        """Stop the worker after what is queued; False when it did not finish within ``timeout``."""
        self._q.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()
