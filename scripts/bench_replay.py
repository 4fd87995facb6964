#!/usr/bin/env python3
"""Benchmark: end-to-end replay throughput with re-ID and matching on versus off.

Generates (once) a synthetic multi-camera scene, then replays it in a fresh subprocess per mode:
``off`` (decode + detect + track + tracklets) and ``on`` (+ embedding, pooling, gallery search,
matching, events to an embedded Redis). Reports frames/s, per-stage ms per frame, peak RSS, and the
scene's cross-camera IDF1 for ``on``. Prints a table and a final JSON line.

  scripts/bench_replay.py [--cameras 3] [--vehicles 12] [--input-size 224] [--max-crops 8]
                          [--detector-model yolo11n_int8_openvino_model] [--max-batch 6]

The scene's own detector is the motion detector; ``--detector-model`` replays it with an ultralytics YOLO
model instead (any file or folder ``detector.model`` takes), to measure that runtime's cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(config: str, out: str, reid: bool, input_size: int, max_crops: int, detector_model: str | None,
           max_batch: int | None) -> dict:
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))
    import contextlib
    import io

    from reidd.config import load_config
    from reidd.daemon import run_replay
    from reidd.telemetry import Metrics

    cfg = load_config(config)
    cfg.reid.enabled = reid
    cfg.reid.input_size = (input_size, input_size)
    cfg.tracklets.max_crops = max_crops
    if detector_model:
        cfg.detector.type = "yolo"
        cfg.detector.model = detector_model
    if max_batch:
        cfg.detector.max_batch = max_batch
    metrics = Metrics()
    with contextlib.redirect_stdout(io.StringIO()):
        _, result = run_replay(cfg, out, metrics=metrics, mtmc_path=Path(out) / "mtmc.txt" if reid else None,
                               save_crops=False)
    embed = sum(s.value for fam in metrics.stage_seconds.collect() for s in fam.samples
                if s.name.endswith("_sum") and s.labels.get("stage") == "embed")
    return {"frames": result.frames, "seconds": result.wall_seconds, "stage_seconds": result.stage_seconds,
            "embed_seconds": embed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--vehicles", type=int, default=12)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--input-size", type=int, default=224, help="re-ID crop size (square)")
    ap.add_argument("--max-crops", type=int, default=8, help="crops embedded per tracklet")
    ap.add_argument("--detector-model", metavar="PATH",
                    help="replay with this ultralytics YOLO model instead of the scene's motion detector")
    ap.add_argument("--max-batch", type=int, help="detector.max_batch (frames per detector call)")
    ap.add_argument("--worker", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.config, args.out, args.worker == "on", args.input_size,
                                            args.max_crops, args.detector_model, args.max_batch)))
        return 0
    if args.detector_model and not Path(args.detector_model).exists():
        ap.error(f"--detector-model: {args.detector_model} does not exist")
    if args.max_batch is not None and args.max_batch < 1:
        ap.error("--max-batch: must be at least 1")
    from reidd.evaluate.mtmc import evaluate_mtmc
    from reidd.synth.scene import generate_scene

    with tempfile.TemporaryDirectory() as tmp:
        scene = generate_scene(Path(tmp) / "scene", cameras=args.cameras, vehicles=args.vehicles, seed=args.seed,
                               progress=False)
        res = {}
        for mode in ("off", "on"):
            out = Path(tmp) / mode
            cmd = [sys.executable, __file__, "--worker", mode, "--config", str(scene.config), "--out", str(out),
                   "--input-size", str(args.input_size), "--max-crops", str(args.max_crops)]
            if args.detector_model:
                cmd += ["--detector-model", str(Path(args.detector_model).resolve())]
            if args.max_batch:
                cmd += ["--max-batch", str(args.max_batch)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
                print(f"bench_replay: the re-ID {mode} run failed: {tail[0]}", file=sys.stderr)
                return 1
            text = done.stdout
            res[mode] = json.loads(next(line[7:] for line in text.splitlines() if line.startswith("RESULT ")))
        score = evaluate_mtmc(scene.gt_mtmc, Path(tmp) / "on" / "mtmc.txt")
    print(f"scene: {args.cameras} cameras x {res['off']['frames'] // args.cameras} frames, {args.vehicles} vehicles; "
          f"detector {Path(args.detector_model).name if args.detector_model else 'motion'}"
          f"{f' (max_batch {args.max_batch})' if args.max_batch else ''}; "
          f"re-ID efficientnet_lite0 {args.input_size}x{args.input_size}, {args.max_crops} crops/tracklet; "
          f"{os.cpu_count()} CPU cores")
    print(f"{'mode':<10}{'frames/s':>10}{'detect':>9}{'track':>9}{'tracklet':>10}{'hand-off':>10}{'re-ID':>9}"
          f"{'peak RSS MB':>13}")
    out = {}
    for mode in ("off", "on"):
        r = res[mode]
        n, st = r["frames"], r["stage_seconds"]
        ms = {k: 1000 * v / n for k, v in st.items()}
        fps = n / r["seconds"]
        print(f"{mode:<10}{fps:10.1f}{ms['detect']:9.2f}{ms['track']:9.2f}{ms['tracklets']:10.2f}"
              f"{ms['sinks'] if mode == 'on' else 0.0:10.2f}{ms.get('reid_worker', 0.0):9.2f}"
              f"{r['peak_rss_mb']:13.0f}")
        out[mode] = {"fps": round(fps, 1), "stage_ms_per_frame": {k: round(v, 3) for k, v in ms.items()},
                     "embed_seconds": round(r["embed_seconds"], 2), "peak_rss_mb": round(r["peak_rss_mb"])}
    print("(ms per frame of the pipeline thread's stages; hand-off = passing tracklets to the re-ID worker, "
          "re-ID = the worker's embedding + matching + events, which overlap with the pipeline)")
    print(f"re-ID on: cross-camera IDF1 {score['idf1']:.3f}, transitions {score['transitions_correct']}/"
          f"{score['transitions_total']}, false merges {score['false_merges']}; "
          f"throughput on/off {out['on']['fps'] / out['off']['fps']:.2f}")
    print(json.dumps({"bench": "replay_reid_on_off", "cameras": args.cameras, "vehicles": args.vehicles,
                      "input_size": args.input_size, "max_crops": args.max_crops,
                      "detector": Path(args.detector_model).name if args.detector_model else "motion",
                      "max_batch": args.max_batch, **out,
                      "idf1": round(score["idf1"], 4), "transition_accuracy": score["transition_accuracy"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
