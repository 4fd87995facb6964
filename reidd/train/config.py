"""Training configuration (``configs/train/*.yaml``): one flat pydantic model, every field described."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reidd.reid.registry import DEFAULT_BACKBONE, BackboneName, stages_help


class TrainConfigError(ValueError):
    """A training config that cannot be used; the message names the file and field."""


class TrainConfig(BaseModel):
    """How to train a re-ID model."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # data
    data: str = Field(..., description="Dataset root folder (or a CSV manifest).")
    layout: Literal["auto", "veri776", "vehicleid", "cityflow", "csv", "folder"] = Field(
        "auto", description="Dataset layout; 'auto' detects it."
    )
    val_identities: float = Field(
        0.2, gt=0, description="Held-out identities when the layout has no query/gallery: fraction (<1) or count."
    )
    val_fold: int = Field(
        0, ge=0,
        description="Which block of val_identities identities (in the seed's order) is held out: folds 0, 1, 2, ... "
        "of one seed are disjoint, for k-fold choices of a recipe (0: the split of earlier versions).",
    )
    on_bad: Literal["error", "skip"] = Field("error", description="Missing/corrupt image: stop, or skip and count.")
    # model
    backbone: BackboneName = Field(
        DEFAULT_BACKBONE, description="CNN backbone (reidd/reid/registry.py lists them)."
    )
    embedding_dim: int | None = Field(None, ge=8, description="Linear reduction before the BNNeck (None: none).")
    attention: bool = Field(False, description="CBAM attention after the backbone.")
    multi_level: bool = Field(False, description="BNNeck + losses on the last three stages; concatenated at test.")
    input_size: tuple[int, int] = Field((224, 224), description="Input (height, width) in pixels.")
    pretrained: str | bool = Field(
        True, description="true: ImageNet weights; false/'none': random; a path: a local backbone state_dict."
    )
    allow_random_init: bool = Field(
        False, description="When ImageNet weights cannot be downloaded, warn and start from random weights."
    )
    freeze_stages: int = Field(
        0, ge=0, description="Leading backbone stages kept frozen (weights and BN statistics); 0 = train all. "
        "Module groups per backbone: " + stages_help() + ".",
    )
    # optimisation
    epochs: int = Field(30, ge=1, description="Training epochs.")
    batch_p: int = Field(16, ge=2, description="Identities per batch (P).")
    batch_k: int = Field(4, ge=2, description="Images per identity per batch (K).")
    max_iters: int | None = Field(None, ge=1, description="Cap on iterations per epoch (short runs).")
    min_iters: int | None = Field(
        None, ge=1, description="Iterations per epoch at least (small datasets: identities are revisited)."
    )
    optimizer: Literal["adam", "sgd"] = Field("adam", description="Optimiser.")
    lr: float = Field(3.5e-4, gt=0, description="Base learning rate.")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    warmup_epochs: int = Field(2, ge=0, description="Linear warm-up epochs (from 10% of lr).")
    schedule: Literal["cosine", "step"] = Field("cosine", description="Decay after warm-up.")
    step_milestones: list[int] = Field(default_factory=lambda: [20, 40], description="Epochs of step decay.")
    step_gamma: float = Field(0.1, gt=0, le=1, description="Step decay factor.")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="Cosine floor as a fraction of lr.")
    # losses
    ce_weight: float = Field(1.0, ge=0, description="Weight of the identity cross-entropy.")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    triplet_weight: float = Field(1.0, ge=0, description="Weight of the batch-hard triplet loss.")
    triplet_margin: float | None = Field(0.3, ge=0, description="Triplet margin; null or 0 = soft margin.")
    ranked_list_weight: float = Field(0.0, ge=0, description="Weight of the ranked-list loss (0 = off).")
    # augmentation
    flip_p: float = Field(0.5, ge=0, le=1, description="Horizontal flip probability.")
    pad: int = Field(10, ge=0, description="Padding before the random crop, pixels.")
    color_jitter: float = Field(0.2, ge=0, le=1, description="Brightness/contrast/saturation jitter.")
    erasing_p: float = Field(0.5, ge=0, le=1, description="Random erasing probability.")
    # runtime
    ema: float | None = Field(
        None, gt=0, lt=1,
        description="Keep an exponential moving average of the weights with this decay per iteration (e.g. 0.999); "
        "validation, best.pt and the exported model use the average (None: off).",
    )
    seed: int = Field(0, description="Seed of everything random (split, sampler, augmentation, init).")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...")
    precision: Literal["auto", "fp32"] = Field(
        "auto", description="'auto': AMP fp16 on CUDA, bf16 autocast on CPUs with native bf16; 'fp32' forces fp32."
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (None: the CPUs this process may use).")
    eval_every: int = Field(1, ge=1, description="Validate every N epochs (and always after the last).")
    eval_batch_size: int = Field(64, ge=1, description="Batch size of validation feature extraction.")
    out: str = Field("runs/reid", description="Output folder: last.pt, best.pt, metrics.csv, training.png.")
    resume: str | None = Field(None, description="Continue from this last.pt (model, optimiser, RNG, epoch).")
    finetune: str | None = Field(None, description="Start from this checkpoint's weights with a fresh optimiser.")

    @field_validator("pretrained", mode="before")
    @classmethod
    def _pretrained(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("none", "false", "no", "random", ""):
            return False
        if isinstance(v, str) and v.strip().lower() in ("true", "yes", "imagenet"):
            return True
        return v

    @field_validator("input_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        if isinstance(v, int):
            return (v, v)
        return v


def load_train_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML config (optional) and apply overrides (None values ignored); errors name file and field."""
    data: dict[str, Any] = {}
    source = str(path) if path else "<command line>"
    if path:
        p = Path(path)
        from reidd.config import ConfigError, read_yaml

        try:
            loaded = read_yaml(p, "training config") or {}
        except ConfigError as exc:
            raise TrainConfigError(f"{p}: {exc.problems[0][1]}") from None
        if not isinstance(loaded, dict):
            raise TrainConfigError(f"{p}: the top level must be a mapping of config fields")
        data.update(loaded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "<root>"
            lines.append(f"  {loc}: {'unknown field' if err['type'] == 'extra_forbidden' else err['msg']}")
        raise TrainConfigError(f"{source}: invalid training config\n" + "\n".join(lines)) from None
