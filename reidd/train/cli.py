"""``reidd train``, ``reidd export`` and ``reidd adapt``: register(subparsers) adds them (``reidd eval``
is in :mod:`reidd.evaluate.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reidd.reid.registry import BACKBONE_NAMES


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _bool_flag(p: argparse.ArgumentParser, name: str, help_text: str) -> None:
    p.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=help_text)


def register(subparsers: Any) -> None:
    """Add the train, export and adapt sub-commands."""
    _register_train(subparsers)
    _register_export(subparsers)
    _register_adapt(subparsers)


# --------------------------------------------------------------------------- train
def _register_train(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="Train a vehicle re-ID model (P x K batches, CE + triplet, BNNeck).",
        description=(
            "Train a re-ID model from a YAML config (configs/train/*.yaml); flags override config fields. "
            "Writes OUT/last.pt (every epoch, resumable), OUT/best.pt (best validation mAP), OUT/metrics.csv "
            "and OUT/training.png. Datasets: VeRi-776, VehicleID, CityFlow-ReID, a CSV manifest or a folder "
            "of <identity>_cam<k>[_<more>].jpg (identity: the whole name before _cam); layouts without query/gallery get an identity-disjoint split."
        ),
    )
    p.add_argument("--config", help="YAML training config (fields of reidd.train.config.TrainConfig).")
    p.add_argument("--data", help="Dataset root folder or CSV manifest.")
    p.add_argument("--layout", choices=["auto", "veri776", "vehicleid", "cityflow", "csv", "folder"],
                   help="Dataset layout (default auto-detect).")
    p.add_argument("--val-identities", type=float,
                   help="Held-out validation identities: a fraction (<1) or a count (>=1).")
    p.add_argument("--val-fold", type=int, metavar="K",
                   help="Hold out the K-th block of --val-identities identities in the seed's order (0 = first): "
                        "folds 0, 1, 2, ... are disjoint validation sets for k-fold choices.")
    p.add_argument("--backbone", choices=BACKBONE_NAMES, help="CNN backbone.")
    p.add_argument("--embedding-dim", type=int, help="Linear reduction to this size before the BNNeck.")
    _bool_flag(p, "--attention", "CBAM attention after the backbone.")
    _bool_flag(p, "--multi-level", "BNNeck and losses on the last three stages (concatenated at test time).")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="Input height and width.")
    p.add_argument("--freeze-stages", type=int, help="Leading backbone stages kept frozen (0 = train all).")
    p.add_argument("--pretrained", help="'imagenet' (default), 'none' (random init) or a local state_dict path.")
    p.add_argument("--epochs", type=int, help="Number of epochs.")
    p.add_argument("--lr", type=float, help="Base learning rate.")
    p.add_argument("--batch-p", type=int, help="Identities per batch (P).")
    p.add_argument("--batch-k", type=int, help="Images per identity per batch (K).")
    p.add_argument("--max-iters", type=int, help="At most N iterations per epoch (short runs).")
    p.add_argument("--min-iters", type=int, help="At least N iterations per epoch (small datasets).")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="Optimiser.")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="Validate and keep an exponential moving average of the weights (decay per iteration, "
                        "e.g. 0.98 for about 50 iterations).")
    p.add_argument("--resume", metavar="CKPT", help="Resume from a last.pt exactly (model, optimiser, RNG, epoch).")
    p.add_argument("--finetune", metavar="CKPT", help="Start from a checkpoint's weights with a fresh optimiser.")
    p.add_argument("--out", help="Output folder.")
    p.add_argument("--seed", type=int, help="Random seed.")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N.")
    p.add_argument("--precision", choices=["auto", "fp32"], help="auto = AMP where supported; fp32 forces fp32.")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes.")
    p.add_argument("--threads", type=int, help="torch CPU threads.")
    p.add_argument("--on-bad", choices=["error", "skip"], help="Missing/corrupt images: stop or skip them.")
    p.add_argument("--no-progress", action="store_true", help="No progress bars.")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from reidd.reid.backbones import PretrainedUnavailable
    from reidd.reid.checkpoint import CheckpointMismatch

    from .config import TrainConfigError, load_train_config
    from .datasets import DatasetError
    from .trainer import train

    overrides = {
        "data": args.data, "layout": args.layout, "val_identities": args.val_identities,
        "val_fold": args.val_fold, "ema": args.ema, "backbone": args.backbone,
        "embedding_dim": args.embedding_dim, "attention": args.attention, "multi_level": args.multi_level,
        "input_size": tuple(args.input_size) if args.input_size else None, "pretrained": args.pretrained,
        "freeze_stages": args.freeze_stages,
        "epochs": args.epochs, "lr": args.lr, "batch_p": args.batch_p, "batch_k": args.batch_k,
        "max_iters": args.max_iters, "min_iters": args.min_iters, "optimizer": args.optimizer, "resume": args.resume, "finetune": args.finetune,
        "out": args.out, "seed": args.seed, "device": args.device, "precision": args.precision,
        "num_workers": args.num_workers, "threads": args.threads, "on_bad": args.on_bad,
    }
    try:
        cfg = load_train_config(args.config, overrides)
    except TrainConfigError as exc:
        return _err(str(exc))
    if cfg.resume and cfg.finetune:
        return _err("--resume and --finetune exclude each other")
    try:
        res = train(cfg, progress=not args.no_progress)
    except (DatasetError, CheckpointMismatch, PretrainedUnavailable, FileNotFoundError, ValueError) as exc:
        return _err(str(exc))
    print(json.dumps({"out": str(res.out_dir), "best_mAP": res.best_map, "best_epoch": res.best_epoch,
                      "epochs": len(res.history)}))
    return 0


# --------------------------------------------------------------------------- export
def _register_export(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export",
        help="Export a re-ID checkpoint to ONNX or TorchScript (checked against PyTorch).",
        description=(
            "Export the eval-mode embedding model (input: float32 (B,3,H,W) normalised RGB; output: (B,D) "
            "embedding, not L2-normalised) with a dynamic batch axis, store the model spec (input size, "
            "normalisation) in the file, and compare with PyTorch on a random batch: fails when the max "
            "abs difference exceeds --tolerance."
        ),
    )
    p.add_argument("--model", required=True, metavar="CKPT", help="reidd checkpoint to export.")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="Output format.")
    p.add_argument("--out", required=True, help="Output file (.onnx or .pt/.torchscript).")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version.")
    p.add_argument("--tolerance", type=float, default=1e-3, help="Largest accepted max abs difference.")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from reidd.reid.checkpoint import CheckpointMismatch, load_checkpoint
    from reidd.reid.export import ExportError, export_model

    try:
        model, _ = load_checkpoint(args.model)
        info = export_model(model, args.out, args.format, opset=args.opset, tolerance=args.tolerance)
    except (CheckpointMismatch, FileNotFoundError) as exc:
        return _err(str(exc))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"exported {args.model} -> {info['path']} ({info['format']}, dim {info['embedding_dim']}, "
          f"input {info['input_size'][0]}x{info['input_size'][1]}); max abs diff vs PyTorch "
          f"{info['max_abs_diff']:.3g}")
    print(json.dumps(info))
    return 0


# --------------------------------------------------------------------------- adapt
def _register_adapt(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "adapt",
        help="Fine-tune the re-ID model on a site's own recordings, without identity labels.",
        description=(
            "Replays the config's file cameras once (detect + track), keeps each tracklet's crops, then in rounds: "
            "embeds the tracklets with the current model, takes confident mutual cross-camera matches under "
            "matching.topology as cross-view positives (a tracklet's own crops are positives; tracklets of one "
            "camera never join), and fine-tunes with the P x K trainer of `reidd train`. A round whose model finds "
            "fewer confident pairs than the one before is not kept. Writes OUT/adapted.pt (use it as reid.weights), "
            "OUT/adapt.json (tracklets, pseudo-identities, cross-camera pairs, rounds) and OUT/adapt.png."
        ),
    )
    p.add_argument("--config", required=True, help="cameras.yaml whose (file) cameras, detector, tracker and "
                                                   "matching.topology describe the site")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--from", dest="start", default=None,
                   help="start from this reidd checkpoint (default: the config's reid.weights, else its ImageNet model)")
    p.add_argument("--rounds", type=int, default=2, help="match -> pseudo-labels -> train rounds (default 2)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs per round (default 6)")
    p.add_argument("--confident", type=float, default=3.0,
                   help="calibrated score a mutual best cross-camera match needs to become a positive (default 3.0)")
    p.add_argument("--freeze-stages", type=int, default=2, help="leading backbone stages kept frozen (default 2)")
    p.add_argument("--lr", type=float, default=3.5e-4, help="learning rate (default 3.5e-4)")
    p.add_argument("--batch-p", type=int, default=16, help="pseudo-identities per batch (default 16)")
    p.add_argument("--batch-k", type=int, default=4, help="crops per pseudo-identity per batch (default 4)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(args: argparse.Namespace) -> int:
    import os

    from reidd.config import ConfigError, check_output_dir, load_config, printable

    from .adapt import AdaptError, adapt
    from .config import TrainConfigError

    why = check_output_dir(os.path.abspath(args.out))
    if why:
        return _err(f"--out: {printable(why)}")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rep = adapt(cfg, args.out, start=args.start, rounds=args.rounds, epochs=args.epochs, confident=args.confident,
                    freeze_stages=args.freeze_stages, lr=args.lr, batch_p=args.batch_p, batch_k=args.batch_k,
                    seed=args.seed, progress=not args.no_progress)
    except (AdaptError, TrainConfigError, ValueError) as exc:
        return _err(str(exc))
    last = rep["rounds"][-1]
    print(json.dumps({"adapted": rep["adapted"], "kept_model": rep["kept_model"], "rounds": len(rep["rounds"]),
                      "cross_view_pairs": [r["cross_view_pairs"] for r in rep["rounds"]],
                      "identities": last["identities"], "seconds": rep["seconds"]}))
    return 0
