"""The training loop: P x K batches, CE + triplet (+ ranked-list) losses, warm-up + cosine/step
schedule, AMP, per-epoch validation, ``last.pt`` / ``best.pt`` checkpoints, ``metrics.csv`` and
``training.png``. A run resumed from ``last.pt`` continues exactly as an uninterrupted one would."""

from __future__ import annotations

import csv
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reidd.reid.backbones import freeze_stages, set_frozen_eval
from reidd.reid.checkpoint import (
    CheckpointMismatch,
    load_checkpoint,
    load_state_checked,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from reidd.reid.features import autocast_context, extract_features, read_rgb
from reidd.device import cpu_threads
from reidd.reid.model import ModelSpec, ReidModel, build_model, pick_device, pick_precision

from .config import TrainConfig
from .datasets import ReidDataset, Sample, load_dataset
from .losses import ReidLoss
from .samplers import PKSampler
from .transforms import build_transforms

CSV_FIELDS = ["epoch", "loss", "loss_ce", "loss_triplet", "loss_rll", "mAP", "rank1", "lr", "time_s"]


@dataclass
class TrainResult:
    """What a training run produced."""

    out_dir: Path
    best_map: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    model: ReidModel | None = None

    @property
    def last_checkpoint(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_checkpoint(self) -> Path:
        return self.out_dir / "best.pt"


class _TrainSet(torch.utils.data.Dataset):
    def __init__(self, samples: list[Sample], transform: Any):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        s = self.samples[i]
        img = torch.from_numpy(read_rgb(s.path)).permute(2, 0, 1).contiguous()
        return self.transform(img), s.pid


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier for a 0-based epoch: linear warm-up from 0.1, then cosine or step decay."""
    if epoch < cfg.warmup_epochs:
        return 0.1 + 0.9 * epoch / cfg.warmup_epochs
    if cfg.schedule == "step":
        return cfg.step_gamma ** sum(epoch >= m for m in cfg.step_milestones)
    span = max(1, cfg.epochs - cfg.warmup_epochs)
    t = (epoch - cfg.warmup_epochs) / span
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def _spec_from_config(cfg: TrainConfig, num_classes: int) -> ModelSpec:
    return ModelSpec(backbone=cfg.backbone, embedding_dim=cfg.embedding_dim, attention=cfg.attention,
                     multi_level=cfg.multi_level, num_classes=num_classes, input_size=tuple(cfg.input_size))


def _build(cfg: TrainConfig, num_classes: int, log: Callable[[str], None]) -> tuple[ReidModel, dict[str, Any] | None]:
    """The model to train, and the checkpoint dict when resuming."""
    if cfg.resume:
        model, meta = load_checkpoint(cfg.resume)
        if model.spec.num_classes != num_classes:
            raise CheckpointMismatch(
                f"{cfg.resume}: trained with {model.spec.num_classes} identities, the dataset has {num_classes} "
                "(resume needs the same data and split; use --finetune to start from its weights instead)"
            )
        log(f"resuming from {cfg.resume} after epoch {meta['epoch']}")
        return model, meta
    if cfg.finetune:
        obj = read_checkpoint(cfg.finetune)
        old = ModelSpec.from_dict(obj["spec"])
        spec = ModelSpec(backbone=old.backbone, embedding_dim=old.embedding_dim, attention=old.attention,
                         multi_level=old.multi_level, num_classes=num_classes, input_size=old.input_size,
                         mean=old.mean, std=old.std)
        model = build_model(spec, pretrained=False)
        load_state_checked(model, obj["state_dict"], cfg.finetune, skip_classifier=True)
        log(f"fine-tuning {old.backbone} from {cfg.finetune} (architecture taken from the checkpoint)")
        return model, None
    pretrained: str | bool = cfg.pretrained
    return build_model(_spec_from_config(cfg, num_classes), pretrained=pretrained,
                       allow_random=cfg.allow_random_init), None


def _write_csv(path: Path, rows: list[dict[str, float]]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in CSV_FIELDS})
    os.replace(tmp, path)


def _read_csv(path: Path, upto_epoch: int) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        rows: list[dict[str, float]] = [
            {k: (int(float(v)) if k == "epoch" else float(v)) for k, v in r.items() if v not in ("", None)}
            for r in csv.DictReader(fh)
        ]
    return [r for r in rows if r.get("epoch", 0) <= upto_epoch]


def validate(model: ReidModel, ds: ReidDataset, *, device: torch.device, batch_size: int = 64,
             precision: str = "auto") -> dict[str, float]:
    """mAP / Rank-1 / mINP of ``model`` on the dataset's query/gallery (cosine)."""
    from reidd.evaluate.metrics import evaluate

    was = model.training
    qf = extract_features(model, ds.query, batch_size=batch_size, device=device, precision=precision, progress=False)
    gf = extract_features(model, ds.gallery, batch_size=batch_size, device=device, precision=precision, progress=False)
    model.train(was)
    res = evaluate(qf, gf, [s.pid for s in ds.query], [s.pid for s in ds.gallery],
                   [s.camid for s in ds.query], [s.camid for s in ds.gallery], progress=False)
    return {"mAP": float(res.mAP), "rank1": res.rank(1), "mINP": float(res.mINP)}


def train(cfg: TrainConfig, *, progress: bool = True, log: Callable[[str], None] | None = None,
          dataset: ReidDataset | None = None, stop_after_epoch: int | None = None) -> TrainResult:
    """Run a training as described by ``cfg``; returns a :class:`TrainResult` whose ``model`` is the final one.

    ``dataset``: an already loaded dataset (else ``cfg.data`` is read). ``stop_after_epoch``: end this run
    after that epoch (the schedule still follows ``cfg.epochs``), e.g. to split a long run into jobs
    continued with ``resume``."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cpu_threads(cfg.threads))
    try:
        return _train(cfg, progress, log or (lambda m: print(m, file=sys.stderr)), dataset, stop_after_epoch)
    finally:
        torch.set_num_threads(threads_before)


def _train(cfg: TrainConfig, progress: bool, log: Callable[[str], None], dataset: ReidDataset | None,
           stop_after_epoch: int | None) -> TrainResult:
    from tqdm import tqdm

    seed_everything(cfg.seed)
    ds = dataset or load_dataset(cfg.data, cfg.layout, val_identities=cfg.val_identities, seed=cfg.seed,
                                 val_fold=cfg.val_fold, on_bad=cfg.on_bad, progress=progress)
    log(ds.summary())
    if ds.num_train_pids < cfg.batch_p:
        raise ValueError(f"batch_p={cfg.batch_p} is more than the {ds.num_train_pids} training identities")
    device = pick_device(cfg.device)
    amp_dtype = pick_precision(device, cfg.precision)
    model, resume_meta = _build(cfg, ds.num_train_pids, log)
    model.to(device).train()
    frozen = freeze_stages(model.backbone, cfg.freeze_stages)
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    criterion = ReidLoss(ce_weight=cfg.ce_weight, label_smoothing=cfg.label_smoothing,
                         triplet_weight=cfg.triplet_weight, triplet_margin=cfg.triplet_margin,
                         ranked_list_weight=cfg.ranked_list_weight)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    start, best_map, best_epoch = 0, -1.0, 0
    if resume_meta is not None:
        for key, obj in (("optimizer", opt), ("scheduler", sched), ("scaler", scaler)):
            if key in resume_meta:
                obj.load_state_dict(resume_meta[key])
        if "rng" in resume_meta:
            restore_rng_state(resume_meta["rng"])
        start = int(resume_meta["epoch"] or 0)
        best_map = float(resume_meta["metrics"].get("best_map", -1.0))
        best_epoch = int(resume_meta["metrics"].get("best_epoch", 0))
    history = _read_csv(out / "metrics.csv", start) if resume_meta is not None else []
    ema = _averaged(model, cfg.ema, resume_meta, log)
    judged = model if ema is None else ema.module  # what is validated, kept as best.pt and returned
    tf = build_transforms(model.spec.input_size, model.spec.mean, model.spec.std, train=True, flip_p=cfg.flip_p,
                          pad=cfg.pad, color_jitter=cfg.color_jitter, erasing_p=cfg.erasing_p)
    sampler = PKSampler([s.pid for s in ds.train], cfg.batch_p, cfg.batch_k, seed=cfg.seed, max_batches=cfg.max_iters,
                        min_batches=cfg.min_iters)
    loader = torch.utils.data.DataLoader(_TrainSet(ds.train, tf), batch_sampler=sampler, num_workers=cfg.num_workers,
                                         pin_memory=device.type == "cuda")
    end = cfg.epochs if stop_after_epoch is None else min(cfg.epochs, stop_after_epoch)
    for epoch in range(start, end):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        model.train()
        set_frozen_eval(frozen)
        sums: dict[str, float] = {}
        n = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="it", disable=not progress, leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast_context(device, amp_dtype):
                outputs = model(x)
            loss, parts = criterion(outputs, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            n += 1
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{sums['loss'] / n:.3f}")
        bar.close()
        lr = opt.param_groups[0]["lr"]
        sched.step()
        row: dict[str, float] = {"epoch": epoch + 1, "lr": lr, **{k: v / max(n, 1) for k, v in sums.items()}}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            row.update(validate(judged, ds, device=device, batch_size=cfg.eval_batch_size,
                                precision="fp32" if cfg.precision == "fp32" else "auto"))
        row["time_s"] = time.perf_counter() - t0
        history.append(row)
        improved = "mAP" in row and row["mAP"] > best_map
        if improved:
            best_map, best_epoch = row["mAP"], epoch + 1
        extra = {"config": cfg.model_dump(mode="json"), "best_map": best_map, "best_epoch": best_epoch,
                 "val": {k: row[k] for k in ("mAP", "rank1", "mINP") if k in row}, "dataset": ds.name}
        save_checkpoint(out / "last.pt", model, epoch=epoch + 1, optimizer=opt, scheduler=sched, scaler=scaler,
                        extra=extra, averaged=None if ema is None else ema.module)
        if improved:
            save_checkpoint(out / "best.pt", judged, epoch=epoch + 1, extra=extra, rng_state=False)
        _write_csv(out / "metrics.csv", history)
        _plot(out)
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {row.get('loss', float('nan')):.4f}"
            + (f" mAP {row['mAP']:.4f} R1 {row['rank1']:.4f}" if "mAP" in row else "")
            + f" lr {lr:.2e} ({row['time_s']:.1f}s)")
    return TrainResult(out, best_map, best_epoch, history, judged)


def _averaged(model: ReidModel, decay: float | None, resume_meta: dict[str, Any] | None,
              log: Callable[[str], None]) -> torch.optim.swa_utils.AveragedModel | None:
    """The exponential moving average of ``model``'s weights and buffers (BatchNorm statistics too), or None
    when ``decay`` is None; on resume it goes on from the average last.pt kept."""
    if decay is None:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if resume_meta is not None:
        if "averaged" not in resume_meta:
            raise CheckpointMismatch(f"{resume_meta['path']}: trained without ema; resume it without ema")
        try:
            ema.module.load_state_dict(resume_meta["averaged"])
        except (RuntimeError, TypeError, AttributeError, KeyError) as exc:  # a damaged or foreign last.pt
            raise CheckpointMismatch(f"{resume_meta['path']}: its weight average does not fit the model "
                                     f"({' '.join(str(exc).split())[:200]})") from exc
        ema.n_averaged.fill_(1)  # the next update averages into it instead of copying the model
        log(f"weight average (decay {decay}) resumed")
    return ema


def _plot(out: Path) -> None:
    from reidd.evaluate.plots import plot_training

    plot_training(out / "metrics.csv", out / "training.png")
