"""reidd checkpoints: one ``torch.save`` dict that loads with ``torch.load(weights_only=True)``.

Layout: ``format``, ``format_version``, ``reidd_version``, ``created`` (ISO time), ``spec``
(ModelSpec as a plain dict), ``state_dict``, ``epoch``, ``extra`` (metrics etc.), and when
given ``optimizer``, ``scheduler``, ``scaler`` state dicts and ``rng`` (torch/numpy/python
random states) so a training run can resume exactly.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model import ModelSpec, ReidModel, build_model

FORMAT = "reidd-reid-checkpoint"
FORMAT_VERSION = 1


class CheckpointMismatch(ValueError):
    """A file that is not a reidd checkpoint, or one that does not fit what was expected."""


def capture_rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), numpy and python RNG states as weights_only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc]
    py = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [int(py[0]), list(py[1]), py[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | Path,
    model: ReidModel,
    *,
    epoch: int | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    extra: dict[str, Any] | None = None,
    rng_state: bool = True,
    averaged: ReidModel | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename); returns the path.

    ``averaged``: the running average of the weights (training's ``ema``), kept beside the trained weights so
    that a resumed run goes on averaging where it stopped."""
    from reidd import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "reidd_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": model.spec.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "extra": dict(extra or {}),
    }
    if optimizer is not None:
        obj["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        obj["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        obj["scaler"] = scaler.state_dict()
    if averaged is not None:
        obj["averaged"] = {k: v.detach().cpu() for k, v in averaged.state_dict().items()}
    if rng_state:
        obj["rng"] = capture_rng_state()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path



def read_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load the raw checkpoint dict (weights_only); :class:`CheckpointMismatch` when it is not a reidd file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointMismatch(f"{p}: not a loadable reidd checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointMismatch(
            f"{p}: not a reidd checkpoint (no 'format: {FORMAT}' entry; a plain state_dict can be used as "
            "--pretrained backbone weights instead)"
        )
    if int(obj.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointMismatch(f"{p}: checkpoint format {obj.get('format_version')} is newer than this reidd")
    return obj


def spec_differences(expect: ModelSpec, got: ModelSpec) -> list[str]:
    """Human-readable list of architecture fields that differ."""
    a, b = expect.architecture(), got.architecture()
    return [f"{k}: expected {a[k]!r}, checkpoint has {b[k]!r}" for k in a if a[k] != b[k]]


def load_state_checked(model: ReidModel, state_dict: dict[str, torch.Tensor], source: str, *,
                       skip_classifier: bool = False) -> None:
    """Load weights, raising :class:`CheckpointMismatch` naming missing/unexpected/mis-shaped keys."""
    own = model.state_dict()
    if skip_classifier:
        own = {k: v for k, v in own.items() if ".classifier." not in k}
        state_dict = {k: v for k, v in state_dict.items() if ".classifier." not in k}
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) e.g. {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) e.g. {unexpected[:3]}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) e.g. {shapes[:3]}")
        raise CheckpointMismatch(f"{source}: weights do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=not skip_classifier)


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu", expect: ModelSpec | None = None
) -> tuple[ReidModel, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; returns ``(model in eval mode, metadata)``.

    metadata: ``spec`` (ModelSpec), ``epoch``, ``metrics`` (the ``extra`` dict), ``reidd_version``,
    ``created``, ``path``, plus ``optimizer``/``scheduler``/``scaler``/``rng``/``averaged`` when stored.
    """
    obj = read_checkpoint(path, map_location=map_location)
    try:
        spec = ModelSpec.from_dict(obj["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointMismatch(f"{path}: invalid model spec in checkpoint ({exc})") from exc
    if expect is not None:
        diff = spec_differences(expect, spec)
        if diff:
            raise CheckpointMismatch(f"{path}: checkpoint does not fit the expected model: " + "; ".join(diff))
    model = build_model(spec, pretrained=False)
    load_state_checked(model, obj["state_dict"], str(path))
    model.eval()
    meta: dict[str, Any] = {
        "spec": spec,
        "epoch": obj.get("epoch"),
        "metrics": obj.get("extra", {}),
        "reidd_version": obj.get("reidd_version"),
        "created": obj.get("created"),
        "path": str(path),
    }
    for key in ("optimizer", "scheduler", "scaler", "rng", "averaged"):
        if key in obj:
            meta[key] = obj[key]
    return model, meta
