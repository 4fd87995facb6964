"""Re-ID losses: label-smoothed cross-entropy, batch-hard triplet (margin or soft margin) and
ranked-list loss, combined per feature level by :class:`ReidLoss`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _euclidean(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(dim=1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * (x @ x.t())
    return d2.clamp_min(1e-12).sqrt()


class BatchHardTriplet(nn.Module):
    """For each anchor: hardest positive and hardest negative in the batch (Euclidean).
    ``margin > 0``: ``relu(d_ap - d_an + margin)``; ``margin is None or 0``: soft margin ``softplus(d_ap - d_an)``."""

    def __init__(self, margin: float | None = 0.3):
        super().__init__()
        self.margin = margin or 0.0

    def forward(self, feats: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        d = _euclidean(feats.float())
        same = pids[:, None] == pids[None, :]
        eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
        d_ap = d.masked_fill(~same | eye, float("-inf")).amax(dim=1)
        d_an = d.masked_fill(same, float("inf")).amin(dim=1)
        valid = torch.isfinite(d_ap) & torch.isfinite(d_an)
        if not valid.any():
            return feats.sum() * 0.0
        diff = d_ap[valid] - d_an[valid]
        return F.relu(diff + self.margin).mean() if self.margin > 0 else F.softplus(diff).mean()


class RankedListLoss(nn.Module):
    """Ranked list loss (Wang et al., CVPR 2019) on L2-normalised features: positives are pulled
    within ``alpha - margin``, negatives pushed beyond ``alpha``, negatives weighted by
    ``exp(temperature * (alpha - d))``."""

    def __init__(self, margin: float = 0.4, alpha: float = 1.2, temperature: float = 10.0):
        super().__init__()
        self.margin, self.alpha, self.temperature = margin, alpha, temperature

    def forward(self, feats: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        d = _euclidean(F.normalize(feats.float(), dim=1))
        same = pids[:, None] == pids[None, :]
        eye = torch.eye(len(pids), dtype=torch.bool, device=pids.device)
        pos_mask = (same & ~eye).float()
        neg_mask = (~same).float()
        pos_l = F.relu(d - (self.alpha - self.margin)) * pos_mask
        pos_n = ((pos_l > 0).float()).sum(dim=1).clamp_min(1.0)
        neg_l = F.relu(self.alpha - d) * neg_mask
        w = torch.exp(self.temperature * (self.alpha - d)) * (neg_l > 0).float()
        neg = (w.detach() * neg_l).sum(dim=1) / w.detach().sum(dim=1).clamp_min(1e-12)
        return (pos_l.sum(dim=1) / pos_n + neg).mean()


class ReidLoss(nn.Module):
    """Weighted sum over feature levels of CE(logits), triplet(pre-BN) and ranked-list(pre-BN).
    Returns ``(total, parts)`` with ``parts`` = mean per level of each term (floats, for logging)."""

    def __init__(self, *, ce_weight: float = 1.0, label_smoothing: float = 0.1, triplet_weight: float = 1.0,
                 triplet_margin: float | None = 0.3, ranked_list_weight: float = 0.0):
        super().__init__()
        self.ce_weight, self.triplet_weight, self.rll_weight = ce_weight, triplet_weight, ranked_list_weight
        self.ce = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.triplet = BatchHardTriplet(triplet_margin)
        self.rll = RankedListLoss()

    def forward(self, out: dict[str, list[torch.Tensor]], pids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        total = torch.zeros((), device=pids.device)
        parts: dict[str, float] = {}
        n = len(out["feat_pre_bn"])

        def add(name: str, value: torch.Tensor, weight: float) -> None:
            nonlocal total
            total = total + weight * value
            parts[name] = parts.get(name, 0.0) + float(value.detach()) / n

        for lvl in range(n):
            if self.ce_weight > 0 and out["logits"]:
                add("loss_ce", self.ce(out["logits"][lvl].float(), pids), self.ce_weight)
            if self.triplet_weight > 0:
                add("loss_triplet", self.triplet(out["feat_pre_bn"][lvl], pids), self.triplet_weight)
            if self.rll_weight > 0:
                add("loss_rll", self.rll(out["feat_pre_bn"][lvl], pids), self.rll_weight)
        return total, parts
