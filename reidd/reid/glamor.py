"""GLAMOR: a compact ResNet-style backbone with global and local attention, trained from scratch.

After Suprem & Pu, "Looking GLAMORous: Vehicle Re-Id in Heterogeneous Cameras Networks with Global and
Local Attention" (2020). The ideas kept here, written for this project (not a port of their code):

* **No ImageNet initialisation**: a small ResNet (BasicBlocks, widths 32-64-128-256, half a ResNet-18)
  trained on the re-ID data alone, with re-ID's usual last stride 1 (the last stage keeps stride 16).
* **Global attention module** (:class:`GlobalAttention`) on the stem's output, the early, high-resolution
  feature map: a channel gate (shared MLP over average- and max-pooled channels) times a spatial gate
  computed by a small dilated convolution stack, applied residually (``x * (1 + gate)``) so that an
  untrained gate can only re-weight the signal, never erase it.
* **Local attention module** (:class:`LocalAttention`) on a parallel copy of the last stage (the local
  branch): ``parts`` soft part masks, self-guided (a 1x1 convolution predicts them from the features,
  no part labels), biased towards horizontal stripes at the start (a stripe prior whose strength is
  learned), each pooling its own slice of channels, followed by channel attention over the part features.
* **Normalisation**: BatchNorm, or GroupNorm (``glamor_gn``) which the paper uses to keep the
  classification and metric losses from pulling the batch statistics apart; GroupNorm does not
  depend on the batch, so small P x K batches and single-crop inference behave the same.

Backbone contract (:mod:`reidd.reid.registry`): ``forward(x)`` returns three maps, all at stride 16:
``[layer3 (128), global branch (256), global ⊕ local (512)]``; the last one (the default single-level
embedding) concatenates the global branch and the part features, as GLAMOR concatenates its global and
local features. ``stages()``: stem + global attention, layer1, layer2, layer3, the two last-stage branches.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

NormFactory = Callable[[int], nn.Module]


def batch_norm(ch: int) -> nn.Module:
    return nn.BatchNorm2d(ch)


def group_norm(ch: int) -> nn.Module:
    """GroupNorm with groups of (up to) 16 channels, at most 32 groups."""
    groups = max(1, min(32, ch // 16))
    while ch % groups:
        groups -= 1
    return nn.GroupNorm(groups, ch)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual (projected when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: NormFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = norm(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.n1(self.conv1(x)))
        y = self.n2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


def _stage(cin: int, cout: int, blocks: int, stride: int, norm: NormFactory) -> nn.Sequential:
    return nn.Sequential(*[BasicBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1, norm)
                           for i in range(blocks)])


class GlobalAttention(nn.Module):
    """Channel gate x spatial gate over an early feature map, applied as ``x * (1 + gate)``.

    Channel: a shared two-layer MLP over the average- and max-pooled channels (as in CBAM).
    Spatial: 1x1 reduction, two dilated 3x3 convolutions (a wide receptive field on the early, large
    map), 1x1 to one logit per position.
    """

    def __init__(self, channels: int, norm: NormFactory, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 8)
        self.channel_mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                         nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), norm(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2, bias=False), norm(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2, bias=False), norm(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The attention in [0, 1], shape (B, C, H, W)."""
        ch = torch.sigmoid(self.channel_mlp(x.mean(dim=(2, 3), keepdim=True))
                           + self.channel_mlp(x.amax(dim=(2, 3), keepdim=True)))
        return ch * torch.sigmoid(self.spatial(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (1.0 + self.gate(x))


class LocalAttention(nn.Module):
    """Self-guided part attention with a stripe prior, then channel attention over the part features.

    A 1x1 convolution predicts ``parts`` logits per position; a prior adds ``-strength * d^2`` where ``d``
    is the distance (in stripes) between the row and stripe ``k``'s centre, so part ``k`` starts as the
    ``k``-th horizontal stripe and the learned logits move it. A softmax over the parts gives soft masks.
    The features are projected to ``parts`` slices of ``channels // parts`` channels; slice ``k`` is
    weighted by mask ``k``, normalised so that the global average pooling of the output map is the
    mask-weighted mean of that slice (one descriptor per part). A squeeze-excite gate over the output's
    channels (the part descriptors) follows.
    """

    def __init__(self, channels: int, norm: NormFactory, parts: int = 4, reduction: int = 8):
        super().__init__()
        if channels % parts:
            raise ValueError(f"LocalAttention: {channels} channels do not split into {parts} parts")
        self.parts = parts
        self.mask_logits = nn.Conv2d(channels, parts, 1)
        nn.init.zeros_(self.mask_logits.weight)  # start from the stripe prior alone
        nn.init.zeros_(self.mask_logits.bias)
        self.prior_strength = nn.Parameter(torch.tensor(2.0))
        self.project = nn.Sequential(nn.Conv2d(channels, channels, 1, bias=False), norm(channels),
                                     nn.ReLU(inplace=True))
        hidden = max(channels // reduction, 8)
        self.channel_gate = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True),
                                          nn.Linear(hidden, channels))

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        """Soft part masks (B, parts, H, W), summing to 1 over the parts at each position."""
        h = x.shape[-2]
        rows = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) / h * self.parts  # row centre, in stripes
        centres = torch.arange(self.parts, dtype=x.dtype, device=x.device) + 0.5
        prior = -((rows.view(1, 1, h, 1) - centres.view(1, -1, 1, 1)) ** 2)  # (1, parts, H, 1)
        return torch.softmax(self.mask_logits(x) + F.softplus(self.prior_strength) * prior, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.masks(x)
        # mean over positions of each mask is 1 after this, so GAP(y) is the mask-weighted mean
        m = m / m.mean(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        f = self.project(x)
        b, c, h, w = f.shape
        parts = f.reshape(b, self.parts, c // self.parts, h, w) * m.unsqueeze(2)
        y = parts.reshape(b, c, h, w)
        gate = torch.sigmoid(self.channel_gate(y.mean(dim=(2, 3))))
        return y * gate.unsqueeze(-1).unsqueeze(-1)


class Glamor(nn.Module):
    """GLAMOR backbone (see the module docstring); ``norm``: ``"bn"`` or ``"gn"``."""

    def __init__(self, norm: str = "bn", widths: tuple[int, int, int, int] = (32, 64, 128, 256),
                 blocks: tuple[int, int, int, int] = (2, 2, 2, 2), parts: int = 4):
        super().__init__()
        if norm not in ("bn", "gn"):
            raise ValueError(f"Glamor: norm 'bn' or 'gn', got '{norm}'")
        nf: NormFactory = batch_norm if norm == "bn" else group_norm
        self.norm = norm
        w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(3, w1, 3, 2, 1, bias=False), nf(w1), nn.ReLU(inplace=True),
            nn.Conv2d(w1, w1, 3, 1, 1, bias=False), nf(w1), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )  # stride 4
        self.global_attention = GlobalAttention(w1, nf)
        self.layer1 = _stage(w1, w1, blocks[0], 1, nf)  # stride 4
        self.layer2 = _stage(w1, w2, blocks[1], 2, nf)  # stride 8
        self.layer3 = _stage(w2, w3, blocks[2], 2, nf)  # stride 16
        self.layer4_global = _stage(w3, w4, blocks[3], 1, nf)  # last stride 1: stays at stride 16
        self.layer4_local = _stage(w3, w4, blocks[3], 1, nf)
        self.local_attention = LocalAttention(w4, nf, parts=parts)
        self.out_channels = [w3, w4, 2 * w4]
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.local_attention.mask_logits:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for blk in self.modules():  # zero-init the last norm of each residual branch (stable from scratch)
            if isinstance(blk, BasicBlock):
                nn.init.zeros_(blk.n2.weight)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.global_attention(self.stem(x))
        c3 = self.layer3(self.layer2(self.layer1(x)))
        g = self.layer4_global(c3)
        loc = self.local_attention(self.layer4_local(c3))
        return [c3, g, torch.cat([g, loc], dim=1)]

    def stages(self) -> list[list[nn.Module]]:
        """Module groups in input-to-output order: stem + global attention, layer1-3, both last-stage branches."""
        return [[self.stem, self.global_attention], [self.layer1], [self.layer2], [self.layer3],
                [self.layer4_global, self.layer4_local, self.local_attention]]


def glamor() -> Glamor:
    """GLAMOR with BatchNorm (registry entry ``glamor``)."""
    return Glamor(norm="bn")


def glamor_gn() -> Glamor:
    """GLAMOR with GroupNorm (registry entry ``glamor_gn``)."""
    return Glamor(norm="gn")
