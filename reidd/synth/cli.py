"""``reidd synth``: write a synthetic multi-camera scene with ground truth."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x360, got {text!r}") from None


def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = text.split(",")
        return float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX in seconds such as 2,6, got {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    from reidd.synth.scene import generate_scene

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        scene = generate_scene(
            args.out, cameras=args.cameras, vehicles=args.vehicles, fps=args.fps, size=args.size, seed=args.seed,
            transit_s=args.transit, crops_dir=args.crops, progress=not args.quiet,
        )
    except ValueError as exc:
        print(f"reidd synth: error: {exc}", file=sys.stderr)
        return 2
    out = scene.out_dir
    print(f"wrote scene to {out}: {len(scene.camera_ids)} camera(s) x {scene.num_frames} frames "
          f"({scene.num_frames / scene.fps:.1f} s at {scene.fps:g} fps, {scene.size[0]}x{scene.size[1]})")
    print(f"  videos:       {', '.join(str(p) for p in scene.videos.values())}")
    print(f"  ground truth: {scene.gt_mtmc} (AI City MTMC), {out / 'gt'}/<camera>.txt (MOTChallenge)")
    print(f"  details:      {scene.meta}")
    print(f"replay it with: reidd replay --config {scene.config} --out {Path(out) / 'out'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``synth`` subcommand."""
    p = subparsers.add_parser(
        "synth",
        help="Write a synthetic multi-camera traffic scene with ground truth (demo, tests).",
        description=(
            "Render a synthetic multi-camera traffic scene: one static road per camera, vehicles that drive "
            "through the cameras in order (c001 -> c002 -> ...) and re-appear after a transit delay. Writes one "
            "video per camera, ground truth in AI City MTMC format (gt/gt_mtmc.txt) and MOTChallenge format "
            "(gt/<camera>.txt), a ready config.yaml for 'reidd replay' and scene.json describing every identity. "
            "The same arguments always give byte-identical files."
        ),
    )
    p.add_argument("--out", required=True, type=Path,
                   help="Folder to write the scene into (created; its files are overwritten).")
    p.add_argument("--cameras", type=int, default=3, help="Number of cameras c001, c002, ... (default: 3).")
    p.add_argument("--vehicles", type=int, default=12, help="Number of vehicle identities (default: 12).")
    p.add_argument("--fps", type=float, default=10.0, help="Frames per second of the videos (default: 10).")
    p.add_argument("--size", type=_size, default=(640, 360), metavar="WxH",
                   help="Frame size in pixels, both even (default: 640x360).")
    p.add_argument("--seed", type=int, default=0, help="Random seed: backgrounds, vehicles, schedule (default: 0).")
    p.add_argument("--transit", type=_range, default=(2.0, 6.0), metavar="MIN,MAX",
                   help="Delay in seconds between leaving one camera and entering the next (default: 2,6).")
    p.add_argument("--crops", type=Path, default=None, metavar="DIR",
                   help=("Composite real vehicle crops instead of drawn vehicles: a folder with a manifest.csv "
                         "(columns path,pid,vehicle_type,camid) such as ../shared/assets/reid/vn-2cam; identity i "
                         "shows its camid-k image in camera k, so the camera count is clamped to the camids."))
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    p.set_defaults(func=_run)
