"""``clip_vit``: a CLIP image encoder refined for re-ID and fused with an appearance CNN.

The idea follows CLIP-SENet (CLIP-based semantic enhancement for vehicle re-ID): a CLIP ViT gives
semantic features that ImageNet CNNs lack (type, make, colour words), an adaptive fine-grained enhancement
module refines them for identity, and they are fused with a CNN's appearance features. Written for this
project; the layout of :class:`ClipVisionTransformer` follows OpenAI CLIP's ``visual`` tower (and
open_clip's, which uses the same names) so their weights load with :func:`load_clip_visual_weights`.

Parts:

* :class:`ClipVisionTransformer`: patch embedding (``conv1``), class token, learned positions, pre-norm
  transformer blocks (``nn.MultiheadAttention``-compatible ``in_proj_weight``/``out_proj``, QuickGELU MLP),
  ``ln_post`` and the ``proj`` into CLIP's joint space, applied (as CLIP-ReID does) to every token, so the
  patch tokens form a semantic map in the same space as the class token. Positions are resampled
  (bilinear) when the input grid differs from the weights' grid, so any ``input_size`` divisible by the
  patch size works.
* :class:`FineGrainedEnhancement`: refines the CLIP patch map with a depthwise-separable convolution
  (local detail the 16-pixel patches blur), gated per channel by the class token (which attributes matter
  for this image) and per position by the patch's agreement with the class token (where they are), added
  back residually. The class token is added to every position of the result, so the map's average
  pooling keeps CLIP's global embedding.
* Fusion: the appearance CNN (EfficientNet-Lite0 of the registry, with its ImageNet weights) sees the
  same image re-normalised to its own statistics; its last map is re-weighted channel-wise by a gate
  computed from the CLIP class token (semantic guidance) and concatenated with the enhanced CLIP map
  resampled to its grid.

Backbone contract: ``forward(x)`` returns ``[Lite0 stage 5 (112, stride 16), enhanced CLIP map (embed,
stride = patch), fused (1280 + embed, stride 32)]``; ``stages()`` is ``[CLIP encoder]``, Lite0's nine
groups, ``[enhancement + fusion]`` (so ``freeze_stages: 1`` freezes exactly the CLIP encoder).

Weights: CLIP's cannot be downloaded here. ``pretrained: PATH`` (``--pretrained PATH``) names a local
state dict of the CLIP visual tower (OpenAI ``ViT-B-16`` converted to a state dict, or open_clip's
``open_clip_pytorch_model.bin``); Lite0's ImageNet weights load alongside. ``pretrained: true`` loads
only Lite0's and stops with :class:`PretrainedUnavailable` naming what to do (``allow_random_init``
goes on with a random CLIP encoder: useful for tests, useless for accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reidd.reid.backbones import (
    EfficientNetLite0,
    PretrainedUnavailable,
    load_efficientnet_lite0_imagenet,
    read_state_dict,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LITE0_MEAN = (127.0 / 255.0,) * 3
LITE0_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class ClipArch:
    """Shape of a CLIP visual tower. The default is OpenAI's ViT-B/16 (224 px, 512-d joint space)."""

    patch: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    embed_dim: int = 512  # CLIP's joint embedding size (the ``proj`` output)
    image_size: int = 224  # the grid the positional embedding is stored for
    quick_gelu: bool = True  # OpenAI weights (and open_clip's "-quickgelu" models); LAION ones use GELU

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


#: What ``clip_vit`` builds. Tests replace it with a tiny arch (monkeypatch); a checkpoint does not store
#: it, so changing it changes what every ``clip_vit`` checkpoint must hold.
CLIP_VIT_ARCH = ClipArch()


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with ``nn.MultiheadAttention``'s parameter names (batch first)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q * (1.0 / math.sqrt(c // self.heads))) @ k.transpose(-2, -1), dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.out_proj(y)


class ResidualBlock(nn.Module):
    """Pre-norm transformer block with CLIP's names (ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj)."""

    def __init__(self, width: int, heads: int, quick_gelu: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU() if quick_gelu else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualBlock(width, heads, quick_gelu) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class ClipVisionTransformer(nn.Module):
    """CLIP's visual ViT; ``forward`` returns (class token, patch-token map), both projected to ``embed_dim``."""

    def __init__(self, arch: ClipArch):
        super().__init__()
        self.arch = arch
        w = arch.width
        self.conv1 = nn.Conv2d(3, w, arch.patch, arch.patch, bias=False)
        scale = w ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(arch.grid ** 2 + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, arch.layers, arch.heads, arch.quick_gelu)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(scale * torch.randn(w, arch.embed_dim))

    def positions(self, gh: int, gw: int) -> torch.Tensor:
        """Positional embedding (1 + gh*gw, width) for a gh x gw patch grid (bilinear resampling)."""
        pos = self.positional_embedding
        g = self.arch.grid
        if (gh, gw) == (g, g):
            return pos
        grid = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)], dim=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.arch.patch
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"clip_vit: input {tuple(x.shape[-2:])} must be a multiple of the patch size {p}")
        t = self.conv1(x)  # (B, width, gh, gw)
        gh, gw = int(t.shape[-2]), int(t.shape[-1])
        t = t.flatten(2).transpose(1, 2)  # (B, gh*gw, width)
        cls = self.class_embedding.view(1, 1, -1).expand(t.shape[0], 1, -1)
        t = torch.cat([cls.to(t.dtype), t], dim=1) + self.positions(gh, gw).to(t.dtype)
        t = self.transformer(self.ln_pre(t))
        t = self.ln_post(t) @ self.proj  # every token into the joint space
        tokens = t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, gh, gw)
        return t[:, 0], tokens


class FineGrainedEnhancement(nn.Module):
    """Adaptive fine-grained enhancement of the CLIP patch map (see the module docstring)."""

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        self.detail = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False), nn.BatchNorm2d(dim), nn.GELU(),
            nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim),
        )
        hidden = max(dim // reduction, 8)
        self.channel_gate = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.where_scale = nn.Parameter(torch.tensor(5.0))
        self.where_bias = nn.Parameter(torch.tensor(0.0))

    def forward(self, tokens: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        cg = torch.sigmoid(self.channel_gate(cls)).unsqueeze(-1).unsqueeze(-1)  # (B, C, 1, 1)
        agree = (F.normalize(tokens, dim=1) * F.normalize(cls, dim=1).unsqueeze(-1).unsqueeze(-1)).sum(1, keepdim=True)
        sg = torch.sigmoid(self.where_scale * agree + self.where_bias)  # (B, 1, H, W)
        refined = tokens + self.detail(tokens) * cg * sg
        return refined + cls.unsqueeze(-1).unsqueeze(-1)


class SemanticFusion(nn.Module):
    """Appearance map re-weighted by a CLIP-driven channel gate, concatenated with the semantic map."""

    def __init__(self, semantic_dim: int, appearance_dim: int):
        super().__init__()
        self.gate = nn.Linear(semantic_dim, appearance_dim)
        nn.init.zeros_(self.gate.weight)  # gate starts at 0.5 everywhere: appearance passes unchanged x1.5
        nn.init.zeros_(self.gate.bias)

    def forward(self, appearance: torch.Tensor, semantic: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(cls)).unsqueeze(-1).unsqueeze(-1)
        sem = F.interpolate(semantic, size=(int(appearance.shape[-2]), int(appearance.shape[-1])),
                            mode="bilinear", align_corners=False)
        return torch.cat([appearance * (1.0 + g), sem], dim=1)


class ClipSENet(nn.Module):
    """CLIP ViT + fine-grained enhancement + EfficientNet-Lite0 appearance branch (registry ``clip_vit``)."""

    def __init__(self, arch: ClipArch | None = None):
        super().__init__()
        self.arch = arch or CLIP_VIT_ARCH
        self.clip = ClipVisionTransformer(self.arch)
        self.appearance = EfficientNetLite0()
        self.enhance = FineGrainedEnhancement(self.arch.embed_dim)
        app = self.appearance.out_channels
        self.fusion = SemanticFusion(self.arch.embed_dim, app[-1])
        self.out_channels = [app[1], self.arch.embed_dim, app[-1] + self.arch.embed_dim]
        # the model's input is normalised with CLIP's statistics; Lite0 expects its own: x' = x * a + b
        a = torch.tensor([s / t for s, t in zip(CLIP_STD, LITE0_STD)]).view(1, 3, 1, 1)
        b = torch.tensor([(m - n) / t for m, n, t in zip(CLIP_MEAN, LITE0_MEAN, LITE0_STD)]).view(1, 3, 1, 1)
        self.register_buffer("_renorm_a", a, persistent=False)
        self.register_buffer("_renorm_b", b, persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        cls, tokens = self.clip(x)
        semantic = self.enhance(tokens, cls)
        maps = self.appearance(x * self._renorm_a + self._renorm_b)
        return [maps[1], semantic, self.fusion(maps[2], semantic, cls)]

    def stages(self) -> list[list[nn.Module]]:
        """[CLIP encoder], Lite0's nine groups (stem, seven block stages, head), [enhancement, fusion]."""
        return [[self.clip], *self.appearance.stages(), [self.enhance, self.fusion]]

    def load_pretrained(self, path: str | Path) -> None:
        """``pretrained: PATH``: CLIP visual weights from ``path``, Lite0's ImageNet weights beside them."""
        load_clip_visual_weights(self.clip, path)
        load_efficientnet_lite0_imagenet(self.appearance, "efficientnet_lite0")


def clip_vit() -> ClipSENet:
    return ClipSENet()


def load_clip_vit_pretrained(net: nn.Module, name: str) -> None:
    """``pretrained: true``: Lite0's ImageNet weights load; CLIP's cannot be had here, which is an error
    (``allow_random_init`` turns it into a warning and keeps the CLIP encoder random)."""
    if not isinstance(net, ClipSENet):
        raise TypeError(f"{name}: expected a ClipSENet, got {type(net).__name__}")
    load_efficientnet_lite0_imagenet(net.appearance, "efficientnet_lite0")
    raise PretrainedUnavailable(
        f"{name}: CLIP weights cannot be downloaded by reidd; pass a local CLIP visual state dict as "
        "pretrained (--pretrained PATH, e.g. open_clip's open_clip_pytorch_model.bin for ViT-B-16, or OpenAI's "
        "ViT-B-16.pt converted with torch.save(torch.jit.load(p).state_dict(), out)); "
        "the EfficientNet-Lite0 branch has its ImageNet weights, the CLIP encoder would stay random"
    )


# --------------------------------------------------------------------------- loading CLIP weights
_PREFIXES = ("module.", "model.", "state_dict.")


def clip_visual_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The visual tower's tensors with our names: drops wrapper prefixes, keeps ``visual.*`` when the file
    holds the whole CLIP model (text tower ignored), accepts a bare visual state dict."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    if any(k.startswith("visual.") for k in out):
        out = {k[len("visual."):]: v for k, v in out.items() if k.startswith("visual.")}
    return out


def _resample_positions(pos: torch.Tensor, grid: int) -> torch.Tensor:
    """(1 + g*g, width) positional embedding of another grid -> ``grid`` x ``grid`` (bilinear)."""
    g = int(round(math.sqrt(pos.shape[0] - 1)))
    body = pos[1:].reshape(1, g, g, -1).permute(0, 3, 1, 2).float()
    body = F.interpolate(body, size=(grid, grid), mode="bilinear", align_corners=False)
    return torch.cat([pos[:1].float(), body.permute(0, 2, 3, 1).reshape(grid * grid, -1)], dim=0).to(pos.dtype)


def load_clip_visual_weights(vit: ClipVisionTransformer, path: str | Path) -> None:
    """Load OpenAI/open_clip CLIP visual weights from a local file into ``vit`` (strict, shapes checked).

    Read with ``torch.load(weights_only=True)`` (or safetensors): no code in the file runs. A positional
    embedding for another grid (e.g. a 336-px model) is resampled. Anything else that does not match
    raises ``ValueError`` naming missing, unexpected and mis-shaped keys and the architecture expected.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CLIP weights file not found: {p}")
    sd = clip_visual_state_dict(read_state_dict(p))
    own = vit.state_dict()
    pos = sd.get("positional_embedding")
    if pos is not None and pos.ndim == 2 and pos.shape[1] == own["positional_embedding"].shape[1] \
            and pos.shape[0] != own["positional_embedding"].shape[0]:
        sd["positional_embedding"] = _resample_positions(pos, vit.arch.grid)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
                 if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        a = vit.arch
        raise ValueError(
            f"{p}: not the CLIP visual tower clip_vit expects (ViT patch {a.patch}, width {a.width}, "
            f"{a.layers} layers, embed {a.embed_dim}; OpenAI/open_clip key names): "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(bad_shape)} with other shapes (e.g. {bad_shape[:3]})"
        )
    vit.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
