"""The re-ID model used by training, evaluation, export and the daemon.

``backbone -> (CBAM) -> BNNeck per level``. A BNNeck is: global average pooling ->
optional linear reduction to ``embedding_dim`` -> BatchNorm1d (bias frozen at 0) ->
identity classifier without bias. The triplet loss uses the pre-BN feature, the
cross-entropy the logits; the post-BN feature is the embedding.

Multi-level (``multi_level=True``): the last three backbone stages each get their own
BNNeck (and losses in training). At test time each level's post-BN feature is
L2-normalised and the levels are concatenated, so every level weighs the same in a
cosine similarity; :func:`reidd.reid.features.extract_features` L2-normalises the whole.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CBAM
from .backbones import build_backbone
from .registry import BACKBONES, DEFAULT_BACKBONE



@dataclass
class ModelSpec:
    """Everything needed to rebuild a model and feed it: architecture, input size and normalisation."""

    backbone: str = DEFAULT_BACKBONE
    embedding_dim: int | None = None
    attention: bool = False
    multi_level: bool = False
    num_classes: int = 0
    input_size: tuple[int, int] = (224, 224)  # (height, width)
    mean: tuple[float, float, float] | None = None  # RGB, on 0..1 pixels; None = the backbone's
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone: unknown '{self.backbone}' (choose from {', '.join(BACKBONES)})")
        if self.embedding_dim is not None and int(self.embedding_dim) < 1:
            raise ValueError(f"embedding_dim: must be positive or None, got {self.embedding_dim}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes: must be >= 0, got {self.num_classes}")
        h, w = (int(v) for v in self.input_size)
        if h < 32 or w < 32:
            raise ValueError(f"input_size: at least 32x32 pixels, got {self.input_size}")
        self.input_size = (h, w)
        entry = BACKBONES[self.backbone]
        self.mean = tuple(float(v) for v in (self.mean or entry.mean))  # type: ignore[assignment]
        self.std = tuple(float(v) for v in (self.std or entry.std))  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean/std: three RGB values each")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, numbers, strings) that ``torch.load(weights_only=True)`` and JSON accept."""
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"] = list(self.mean or ())
        d["std"] = list(self.std or ())
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelSpec":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"ModelSpec: unknown field(s) {unknown}")
        d = dict(d)
        for key in ("input_size", "mean", "std"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)

    def architecture(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on to be loaded into this spec."""
        return {
            "backbone": self.backbone,
            "embedding_dim": self.embedding_dim,
            "attention": self.attention,
            "multi_level": self.multi_level,
            "input_size": tuple(self.input_size),
        }


class BNNeck(nn.Module):
    """GAP -> (linear) -> BatchNorm1d with frozen zero bias -> classifier (no bias)."""

    def __init__(self, in_dim: int, embedding_dim: int | None, num_classes: int):
        super().__init__()
        self.reduce = nn.Linear(in_dim, embedding_dim) if embedding_dim else None
        dim = embedding_dim or in_dim
        self.bn = nn.BatchNorm1d(dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False) if num_classes > 0 else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)
        self.dim = dim

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pre = fmap.mean(dim=(2, 3))
        if self.reduce is not None:
            pre = self.reduce(pre)
        return pre, self.bn(pre)


class ReidModel(nn.Module):
    """Backbone + BNNeck(s). Train mode returns a dict of lists (one entry per level);
    eval mode returns the (B, D) embedding, not normalised (single level)."""

    def __init__(self, spec: ModelSpec, backbone: nn.Module):
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        chans: list[int] = list(backbone.out_channels)  # type: ignore[arg-type]
        self.levels = [0, 1, 2] if spec.multi_level else [2]
        self.attn = nn.ModuleList([CBAM(chans[i]) for i in self.levels]) if spec.attention else None
        self.necks = nn.ModuleList([BNNeck(chans[i], spec.embedding_dim, spec.num_classes) for i in self.levels])
        self.register_buffer("_mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("_std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0, persistent=False)

    @property
    def embedding_dim(self) -> int:
        """Size of the eval-mode embedding."""
        return sum(n.dim for n in self.necks)

    def _levels(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        maps = self.backbone(x)
        out = []
        for j, i in enumerate(self.levels):
            m = maps[i]
            if self.attn is not None:
                m = self.attn[j](m)
            out.append(self.necks[j](m))
        return out

    def forward(self, x: torch.Tensor) -> Any:
        levels = self._levels(x)
        if not self.training:
            if len(levels) == 1:
                return levels[0][1]
            return torch.cat([F.normalize(post, dim=1) for _, post in levels], dim=1)
        logits = [n.classifier(post) for n, (_, post) in zip(self.necks, levels) if n.classifier is not None]
        return {"feat_pre_bn": [p for p, _ in levels], "feat": [q for _, q in levels], "logits": logits}

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """0..255 RGB (B, 3, H, W), any size -> the float input the model expects (spec mean/std)."""
        return (x.float() - self._mean) / self._std


def build_model(spec: ModelSpec, *, pretrained: str | bool = True, allow_random: bool = False) -> ReidModel:
    """Build a :class:`ReidModel`. ``pretrained``: True (ImageNet; efficientnet_lite0 works offline,
    resnets download from torchvision), a local state_dict path, or False (random).
    When ImageNet weights cannot be had, raises ``PretrainedUnavailable`` unless ``allow_random``."""
    return ReidModel(spec, build_backbone(spec.backbone, pretrained, allow_random=allow_random))


# --------------------------------------------------------------------------- device / precision
def pick_device(name: str = "auto") -> torch.device:
    """``auto``: cuda when available, else cpu; ``cpu``, ``cuda``, ``cuda:N`` (see :mod:`reidd.device`)."""
    from reidd.device import resolve_device

    return torch.device(resolve_device(name))


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # pragma: no cover - private API changed
            continue
    return False


def pick_precision(device: torch.device | str, name: str = "auto") -> torch.dtype:
    """``auto``: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32; or an explicit fp32/fp16/bf16."""
    dev = torch.device(device) if isinstance(device, str) else device
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if name in table:
        if dev.type == "cpu" and name == "fp16":
            raise ValueError("precision: fp16 is not supported on CPU (use bf16 or fp32)")
        return table[name]
    if name != "auto":
        raise ValueError(f"precision: unknown '{name}' (auto, fp32, fp16, bf16)")
    if dev.type == "cuda":
        return torch.float16
    if dev.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32
