"""``reidd eval``: score re-ID models on a dataset's query/gallery protocol (mAP, mINP, CMC), with
re-ranking; ``register(subparsers)`` adds the command."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reidd.reid.registry import BACKBONE_NAMES
from reidd.train.cli import _err  # the learning commands' one-line error (exit 2)


def register(subparsers: Any) -> None:
    """Add the eval sub-command."""
    p = subparsers.add_parser(
        "eval",
        help="Evaluate re-ID models (mAP, mINP, CMC) on a dataset, with optional re-ranking.",
        description=(
            "Extract features with each model and score the dataset's query/gallery (same identity and same "
            "camera gallery items are excluded). Prints one row per model x metric x re-ranking and writes "
            "OUT/results.json and OUT/cmc.png. Models need no class head, so cross-dataset evaluation works. "
            "With several models the equal-weight ensemble (mean cosine similarity) is reported too."
        ),
    )
    p.add_argument("--data", required=True, help="Dataset root folder or CSV manifest.")
    p.add_argument("--layout", default="auto", choices=["auto", "veri776", "vehicleid", "cityflow", "csv", "folder"],
                   help="Dataset layout (default auto-detect).")
    p.add_argument("--val-identities", type=float, default=0.2,
                   help="For layouts without query/gallery: held-out identities (fraction or count), as in training.")
    p.add_argument("--seed", type=int, default=0, help="Seed of the identity split (use the training seed).")
    p.add_argument("--val-fold", type=int, default=0, metavar="K",
                   help="Which block of --val-identities identities was held out (use the training's val_fold).")
    p.add_argument("--model", action="append", default=[], metavar="CKPT", help="A reidd checkpoint (repeatable).")
    p.add_argument("--imagenet", action="append", default=[], metavar="BACKBONE",
                   choices=BACKBONE_NAMES,
                   help="Also evaluate an ImageNet-only backbone (GAP features, no re-ID training); repeatable.")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=(224, 224),
                   help="Input size of --imagenet models (checkpoints use their own).")
    p.add_argument("--metric", choices=["cosine", "euclidean", "both"], default="cosine", help="Distance.")
    p.add_argument("--mode", choices=["image", "image-track", "track"], default="image",
                   help="image: image vs image; image-track: image queries vs gallery tracks (mean feature); "
                        "track: query tracks vs gallery tracks. Samples without a track are their own track.")
    p.add_argument("--rerank", nargs="+", default=["none"],
                   choices=["none", "kreciprocal", "qe", "aqe", "dba", "track-avg", "diffusion", "attributes",
                            "kreciprocal+attributes", "diffusion+attributes"],
                   help="Re-ranking variants to report (several allowed): k-reciprocal, average query expansion, "
                        "alpha-QE (alpha=3), database augmentation, gallery track distance averaging, diffusion on "
                        "the gallery's mutual-kNN graph, colour/type agreement (--attribute-model) alone or added "
                        "to k-reciprocal or diffusion.")
    p.add_argument("--k1", type=int, default=20, help="k-reciprocal k1.")
    p.add_argument("--k2", type=int, default=6, help="k-reciprocal k2.")
    p.add_argument("--lambda", dest="lambda_value", type=float, default=0.3, help="k-reciprocal lambda.")
    p.add_argument("--qe-k", type=int, default=5, help="Neighbours of QE / AQE / DBA.")
    p.add_argument("--diffusion-k", type=int, default=10, help="Diffusion: mutual-kNN size of the gallery graph and "
                   "seed neighbours of each query.")
    p.add_argument("--diffusion-alpha", type=float, default=0.9, help="Diffusion: walk continuation, in (0, 1).")
    p.add_argument("--diffusion-gamma", type=float, default=3.0, help="Diffusion: exponent on the cosine affinities.")
    p.add_argument("--diffusion-truncation", type=int, default=1000,
                   help="Diffusion: most similar gallery items per query that take part.")
    p.add_argument("--diffusion-iterations", type=int, default=20, help="Diffusion: conjugate-gradient iterations.")
    p.add_argument("--attribute-model", metavar="XML",
                   help="OpenVINO IR of vehicle-attributes-recognition-barrier-0039 (colour and type of every crop), "
                        "for the *attributes re-rankings.")
    p.add_argument("--attribute-weight", type=float, default=0.05,
                   help="Attributes: distance subtracted per unit of colour+type log likelihood ratio.")
    p.add_argument("--attribute-clip", type=float, default=1.5,
                   help="Attributes: bound on a pair's log likelihood ratio.")
    p.add_argument("--scales", default="1.0", help="Comma-separated input scales averaged per image, e.g. 1.0,1.25.")
    p.add_argument("--flip", action="store_true", help="Also average the horizontally flipped image's embedding.")
    p.add_argument("--batch-size", type=int, default=64, help="Images per forward pass.")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N.")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="Inference precision.")
    p.add_argument("--num-workers", type=int, default=0, help="Image loading worker processes.")
    p.add_argument("--on-bad", choices=["error", "skip"], default="error", help="Missing/corrupt images.")
    p.add_argument("--out", default="runs/eval", help="Output folder for results.json and cmc.png.")
    p.add_argument("--no-progress", action="store_true", help="No progress bars.")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from reidd.evaluate.plots import plot_cmc
    from reidd.reid.backbones import PretrainedUnavailable
    from reidd.reid.checkpoint import CheckpointMismatch, load_checkpoint
    from reidd.reid.model import ModelSpec, build_model

    from reidd.train.datasets import DatasetError, load_dataset
    from reidd.train.evaluation import embed_dataset, ensemble, evaluate_features, format_table

    if not args.model and not args.imagenet:
        return _err("give at least one --model CKPT or --imagenet BACKBONE")
    try:
        scales = tuple(float(s) for s in args.scales.split(",") if s.strip())
    except ValueError:
        return _err(f"--scales: comma-separated numbers expected, got '{args.scales}'")
    if not scales or min(scales) <= 0:
        return _err(f"--scales: positive numbers expected, got '{args.scales}'")
    progress = not args.no_progress
    extra = _rerank_options(args)
    if isinstance(extra, int):
        return extra
    try:
        ds = load_dataset(args.data, args.layout, val_identities=args.val_identities, seed=args.seed,
                          val_fold=args.val_fold,
                          on_bad=args.on_bad, progress=progress)
    except DatasetError as exc:
        return _err(str(exc))
    print(ds.summary(), file=sys.stderr)
    if extra["attribute_model"] is not None:
        from reidd.reid.features import ImageReadError

        try:
            extra["attributes"] = (extra["attribute_model"].predict_files([s.path for s in ds.query]),
                                   extra["attribute_model"].predict_files([s.path for s in ds.gallery]))
        except ImageReadError as exc:
            return _err(f"--attribute-model: {exc}")
    models: list[tuple[str, Any]] = []
    try:
        for path in args.model:
            model, _ = load_checkpoint(path)
            models.append((Path(path).parent.name + "/" + Path(path).name, model))
        for bb in args.imagenet:
            models.append((f"imagenet:{bb}", build_model(ModelSpec(backbone=bb, input_size=tuple(args.input_size)))))
    except (CheckpointMismatch, FileNotFoundError, PretrainedUnavailable, ValueError) as exc:
        return _err(str(exc))
    metrics = ("cosine", "euclidean") if args.metric == "both" else (args.metric,)
    kw = dict(metrics=metrics, mode=args.mode, reranks=tuple(dict.fromkeys(args.rerank)), k1=args.k1, k2=args.k2,
              lambda_value=args.lambda_value, qe_k=args.qe_k, progress=False, diffusion=extra["diffusion"],
              attributes=extra.get("attributes"), attribute_params=extra["attribute_params"])
    rows, feats, speed = [], [], {}
    for name, model in models:
        try:
            qf, gf, ips = embed_dataset(model, ds, scales=scales, flip=args.flip, batch_size=args.batch_size,
                                        device=args.device, precision=args.precision, num_workers=args.num_workers,
                                        progress=progress)
        except ValueError as exc:
            return _err(f"{name}: {exc}")
        speed[name] = ips
        feats.append((qf, gf))
        rows += evaluate_features(name, qf, gf, ds, **kw)
    if len(models) > 1:
        qf = ensemble([q for q, _ in feats])
        gf = ensemble([g for _, g in feats])
        rows += evaluate_features("ensemble(" + ",".join(n for n, _ in models) + ")", qf, gf, ds, **kw)
    print(format_table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "dataset": ds.name, "data": str(args.data), "mode": args.mode, "scales": list(scales), "flip": args.flip,
        "num_query": len(ds.query), "num_gallery": len(ds.gallery), "images_per_s": speed,
        "diffusion": vars(extra["diffusion"]) if "diffusion" in kw["reranks"] or "diffusion+attributes" in kw["reranks"]
        else None,
        "attributes": None if extra["attribute_model"] is None else {
            "model": str(extra["attribute_model"].path), **vars(extra["attribute_params"])},
        "results": [{"model": r.model, "metric": r.metric, "rerank": r.rerank, **r.result} for r in rows],
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    curves = {f"{r.model} {r.metric} {r.rerank}": np.asarray(r.cmc) for r in rows}
    plot_cmc(curves, out / "cmc.png", max_rank=min(20, min(len(c) for c in curves.values())),
             title=f"CMC on {ds.name} ({args.mode})")
    print(f"wrote {out / 'results.json'} and {out / 'cmc.png'}", file=sys.stderr)
    return 0


def _rerank_options(args: argparse.Namespace) -> dict[str, Any] | int:
    """The diffusion and attribute settings checked, the attribute model loaded when a re-ranking uses it;
    an int (the exit status, the error printed) when something is wrong."""
    from reidd.evaluate.attributes import AttributeModel, AttributeModelError, AttributeParams
    from reidd.evaluate.diffusion import DiffusionParams

    try:
        diffusion = DiffusionParams(k=args.diffusion_k, alpha=args.diffusion_alpha, gamma=args.diffusion_gamma,
                                    truncation=args.diffusion_truncation, iterations=args.diffusion_iterations).check()
    except ValueError as exc:
        return _err(f"--diffusion-{exc}")
    try:
        params = AttributeParams(weight=args.attribute_weight, clip=args.attribute_clip).check()
    except ValueError as exc:
        return _err(f"--attribute-{exc}")
    wanted = [r for r in args.rerank if r.endswith("attributes")]
    model = None
    if wanted and not args.attribute_model:
        return _err(f"--attribute-model: --rerank {wanted[0]} needs the colour/type model "
                    "(vehicle-attributes-recognition-barrier-0039.xml)")
    if wanted:
        try:
            model = AttributeModel(args.attribute_model, batch_size=args.batch_size)
        except AttributeModelError as exc:
            return _err(f"--attribute-model: {exc}")
    elif args.attribute_model:
        print("note: --attribute-model is only used by the *attributes re-rankings; not loaded", file=sys.stderr)
    return {"diffusion": diffusion, "attribute_params": params, "attribute_model": model}
