"""Export the eval-mode embedding model to ONNX (dynamic batch) or TorchScript, check it numerically
against PyTorch, and run ONNX models with onnxruntime.

Input: float32 (B, 3, H, W), RGB, already normalised with the spec's mean/std (on 0..1 pixels).
Output: the (B, D) embedding exactly as ``ReidModel.eval()(x)`` gives it, i.e. **not** L2-normalised.
The ModelSpec is stored as JSON in the ONNX ``metadata_props`` (key ``reidd.spec``) and in the
TorchScript archive's extra file ``reidd_spec.json``, so consumers can read input size and
normalisation back (:func:`read_onnx_spec`, :func:`read_torchscript_spec`).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import ModelSpec, ReidModel

SPEC_KEY = "reidd.spec"
VERSION_KEY = "reidd.version"
TS_SPEC_FILE = "reidd_spec.json"
DEFAULT_TOLERANCE = 1e-3


class ExportError(RuntimeError):
    """Export failed or the exported model disagrees with PyTorch."""


def _dummy(spec: ModelSpec, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, 3, *spec.input_size), generator=g)


def export_onnx(model: ReidModel, path: str | Path, *, opset: int = 17) -> Path:
    """Write an ONNX file with a dynamic batch axis and the spec in its metadata."""
    import onnx

    from reidd import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about python ints for the fixed H, W padding
        torch.onnx.export(
            model, (_dummy(model.spec, 2),), str(path), dynamo=False, opset_version=opset,
            input_names=["images"], output_names=["embeddings"],
            dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
        )
    proto = onnx.load(str(path))
    for key, value in ((SPEC_KEY, json.dumps(model.spec.to_dict())), (VERSION_KEY, __version__)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def export_torchscript(model: ReidModel, path: str | Path) -> Path:
    """Write a traced TorchScript archive (any batch size) with the spec as an extra file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (_dummy(model.spec, 2),), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TS_SPEC_FILE: json.dumps(model.spec.to_dict())})
    return path


def read_onnx_spec(path: str | Path) -> ModelSpec:
    """The ModelSpec stored in a reidd ONNX file (ValueError naming the file when absent)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in proto.metadata_props}
    if SPEC_KEY not in props:
        raise ValueError(f"{path}: no '{SPEC_KEY}' metadata (not exported by reidd)")
    return ModelSpec.from_dict(json.loads(props[SPEC_KEY]))


def read_torchscript_spec(path: str | Path) -> ModelSpec:
    """The ModelSpec stored in a reidd TorchScript archive."""
    extra = {TS_SPEC_FILE: ""}
    load_torchscript(path, extra)
    if not extra[TS_SPEC_FILE]:
        raise ValueError(f"{path}: no {TS_SPEC_FILE} inside (not exported by reidd)")
    return ModelSpec.from_dict(json.loads(extra[TS_SPEC_FILE]))


def load_torchscript(path: str | Path, extra_files: dict[str, str] | None = None) -> Any:
    """``torch.jit.load`` on CPU (its deprecation warning silenced); fills ``extra_files`` when given."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if extra_files is None:
            return torch.jit.load(str(path), map_location="cpu")
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files)


class OnnxEmbedder:
    """Run a reidd ONNX model with onnxruntime: ``emb = OnnxEmbedder(path)(x)``.

    ``x``: float32 (B, 3, H, W) normalised input; returns the (B, D) float32 embedding (not normalised).
    ``spec`` holds input size and normalisation. ``providers`` default: CUDA when available, then CPU.
    """

    def __init__(self, path: str | Path, *, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        self.spec = read_onnx_spec(self.path)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # Worker threads sleep between calls instead of spinning: the embedder shares the cores with
        # decoding, detection and tracking, and spinning threads take their time.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        wanted = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=wanted)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        h, w = self.spec.input_size
        if x.ndim != 4 or x.shape[1:] != (3, h, w):
            raise ValueError(f"{self.path}: expected input (B, 3, {h}, {w}), got {x.shape}")
        return self.session.run(None, {self.input_name: x})[0]


def verify_export(model: ReidModel, path: str | Path, fmt: str, *, batch: int = 3, seed: int = 1) -> float:
    """Max abs difference between PyTorch and the exported model on a random batch."""
    model = model.cpu().eval()
    x = _dummy(model.spec, batch, seed)
    with torch.no_grad():
        ref = model(x).numpy()
    if fmt == "onnx":
        got = OnnxEmbedder(path, providers=["CPUExecutionProvider"])(x.numpy())
    else:
        ts = load_torchscript(path)
        with torch.no_grad():
            got = ts(x).numpy()
    if got.shape != ref.shape:
        raise ExportError(f"{path}: output shape {got.shape} differs from PyTorch {ref.shape}")
    return float(np.abs(got - ref).max())


def export_model(model: ReidModel, path: str | Path, fmt: str, *, opset: int = 17,
                 tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Export and verify; raises :class:`ExportError` when the max abs diff exceeds ``tolerance``."""
    if fmt == "onnx":
        export_onnx(model, path, opset=opset)
    elif fmt == "torchscript":
        export_torchscript(model, path)
    else:
        raise ValueError(f"format: 'onnx' or 'torchscript', got '{fmt}'")
    diff = verify_export(model, path, fmt)
    if not diff <= tolerance:
        raise ExportError(f"{path}: exported model differs from PyTorch by {diff:.3g} (tolerance {tolerance:g})")
    return {"path": str(path), "format": fmt, "max_abs_diff": diff, "embedding_dim": model.embedding_dim,
            "input_size": list(model.spec.input_size)}
