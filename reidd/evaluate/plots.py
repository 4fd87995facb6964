"""Plots of re-ID evaluation and training: CMC curves, training curves, distance histograms.

Every function draws with matplotlib's non-interactive Agg backend, writes a PNG (parent folders
are created) and returns its path.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return out


def plot_cmc(curves: dict[str, np.ndarray], path: str | Path, max_rank: int = 20, title: str | None = None) -> Path:
    """CMC curves (Rank-k accuracy against k) of several models on one chart; ``curves[name][k-1]`` is Rank-k."""
    if not curves:
        raise ValueError("curves: expected at least one named CMC curve")
    if max_rank < 1:
        raise ValueError(f"max_rank: expected a positive integer, got {max_rank!r}")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, cmc in curves.items():
        arr = np.asarray(cmc, dtype=np.float64).reshape(-1)
        if arr.size == 0 or not np.isfinite(arr).all():
            raise ValueError(f"curves[{name!r}]: expected a non-empty array of finite Rank-k values")
        ks = np.arange(1, min(max_rank, arr.size) + 1)
        label = f"{name} (R1 {100 * arr[0]:.1f}%" + (f", R5 {100 * arr[4]:.1f}%)" if arr.size >= 5 else ")")
        ax.plot(ks, 100 * arr[: len(ks)], marker="o", markersize=3, label=label)
    ax.set_xlabel("rank k")
    ax.set_ylabel("Rank-k accuracy (%)")
    ax.set_xlim(1, max_rank)
    ax.set_ylim(top=100.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(title or "CMC")
    return _save(fig, path)


def _read_training_csv(csv_path: Path) -> dict[str, np.ndarray]:
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: training log not found")
    with csv_path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "epoch" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: expected a header with an 'epoch' column, got {reader.fieldnames}")
        fields = [f for f in reader.fieldnames if f]
        cols: dict[str, list[float]] = {f: [] for f in fields}
        for line, row in enumerate(reader, start=2):
            for f in fields:
                cell = (row.get(f) or "").strip()
                try:
                    cols[f].append(float(cell) if cell else math.nan)
                except ValueError:
                    raise ValueError(f"{csv_path}: line {line}, column {f!r}: not a number: {cell!r}") from None
    data = {f: np.asarray(v, dtype=np.float64) for f, v in cols.items()}
    if len(data["epoch"]) == 0:
        raise ValueError(f"{csv_path}: no data rows")
    return data


def plot_training(csv_path: str | Path, png_path: str | Path) -> Path:
    """Training curves from a CSV log with columns ``epoch``, ``loss`` (and any ``loss_*``), ``mAP``,
    ``rank1`` and ``lr``; empty cells (e.g. epochs without evaluation) are skipped. Panels: losses,
    mAP / Rank-1, learning rate (each shown when its columns are present).
    """
    path = Path(csv_path)
    data = _read_training_csv(path)
    epoch = data["epoch"]
    losses = [f for f in data if f == "loss" or f.startswith("loss_")]
    scores = [f for f in ("mAP", "rank1") if f in data]
    panels = [p for p in (losses, scores, ["lr"] if "lr" in data else []) if p]
    if not panels:
        raise ValueError(f"{path}: none of the columns loss, loss_*, mAP, rank1, lr is present")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.0 * len(panels), 3.8), squeeze=False)
    for ax, cols in zip(axes[0], panels):
        for f in cols:
            ok = np.isfinite(data[f]) & np.isfinite(epoch)
            scale = 100.0 if f in scores and np.nanmax(np.append(data[f][ok], 0.0)) <= 1.0 else 1.0
            ax.plot(epoch[ok], scale * data[f][ok], marker="o" if ok.sum() < 30 else None, markersize=3, label=f)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if cols is losses:
            ax.set_title("loss")
        elif cols is scores:
            ax.set_title("mAP / Rank-1 (%)")
        else:
            ax.set_title("learning rate")
            if np.nanmin(np.append(data["lr"], np.inf)) > 0:
                ax.set_yscale("log")
        ax.legend(fontsize="small")
    fig.suptitle(path.name)
    fig.tight_layout()
    return _save(fig, png_path)


def plot_distance_histogram(
    pos: np.ndarray, neg: np.ndarray, path: str | Path, threshold: float | None = None
) -> Path:
    """Histograms of distances between same-identity (``pos``) and different-identity (``neg``) pairs,
    with an optional decision ``threshold`` line and the error rates it implies.
    """
    p = np.asarray(pos, dtype=np.float64).reshape(-1)
    n = np.asarray(neg, dtype=np.float64).reshape(-1)
    for name, arr in (("pos", p), ("neg", n)):
        if arr.size == 0 or not np.isfinite(arr).all():
            raise ValueError(f"{name}: expected a non-empty array of finite distances")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lo, hi = float(min(p.min(), n.min())), float(max(p.max(), n.max()))
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 61)
    ax.hist(n, bins=bins, density=True, alpha=0.55, color="tab:red", label=f"different id (n={n.size})")
    ax.hist(p, bins=bins, density=True, alpha=0.55, color="tab:green", label=f"same id (n={p.size})")
    if threshold is not None:
        fnr = float((p > threshold).mean())
        fpr = float((n <= threshold).mean())
        ax.axvline(threshold, color="black", linestyle="--",
                   label=f"threshold {threshold:.3f}: miss {100 * fnr:.1f}%, false match {100 * fpr:.1f}%")
    ax.set_xlabel("distance")
    ax.set_ylabel("density")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("Distance distributions")
    return _save(fig, path)
