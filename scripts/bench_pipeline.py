#!/usr/bin/env python3
"""Benchmark: decode + detect + track of one video through reidd's pipeline, against ultralytics'
own ``YOLO.track()`` with the same weights, tracker and frames.

Each side runs in its own subprocess (so peak RSS is its own). Prints a table and a final JSON line.

  scripts/bench_pipeline.py --video ../shared/assets/video/ua-detrac-intersection.mp4 \
      --model ../shared/assets/models/yolov8n_dynamic_int8.onnx [--tracker bytetrack] [--frames N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
CLASSES = [2, 3, 5, 7]


def _env() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _clip(video: str, frames: int | None, tmp: Path) -> str:
    """The first ``frames`` frames re-encoded losslessly enough (MJPG) so both sides see the same input."""
    if not frames:
        return video
    import cv2

    cap = cv2.VideoCapture(video)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out = None
    path = tmp / "clip.avi"
    for _ in range(frames):
        ok, img = cap.read()
        if not ok:
            break
        if out is None:
            out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (img.shape[1], img.shape[0]))
        out.write(img)
    out.release()
    return str(path)


def run_decode(video: str) -> dict:
    import cv2

    cap = cv2.VideoCapture(video)
    t = time.perf_counter()
    n = 0
    while cap.read()[0]:
        n += 1
    return {"frames": n, "seconds": time.perf_counter() - t}


def run_reidd(video: str, model: str, tracker: str, imgsz: int, overlap: bool = True) -> dict:
    _env()
    from reidd.config import parse_config
    from reidd.context import RunContext
    from reidd.pipeline import Pipeline

    cfg = parse_config({
        "cameras": [{"id": "bench", "url": video, "queue_size": 16}],
        # like for like with YOLO.track(): one whole-frame model call per frame, boxes as detected
        "detector": {"model": model, "imgsz": imgsz, "max_batch": 1, "tiles": 1, "riders": False},
        "tracker": {"type": tracker, "gmc_method": "none"},
        "reid": {"enabled": False}, "metrics": {"enabled": False},
    }, "bench", ".")
    r = Pipeline(cfg, RunContext.for_replay(), detect_ahead=overlap).run()  # the model loads in the constructor, untimed
    return {"frames": r.frames, "seconds": r.wall_seconds, "stage_seconds": r.stage_seconds,
            "tracklets": r.cameras["bench"].tracklets, "peak_rss_mb": _peak_rss_mb()}


def run_ultralytics(video: str, model: str, tracker: str, imgsz: int) -> dict:
    _env()
    from ultralytics import YOLO

    yolo = YOLO(model, task="detect")
    t = time.perf_counter()
    n = 0
    ids: set[int] = set()
    for res in yolo.track(source=video, stream=True, tracker=f"{tracker}.yaml", classes=CLASSES, imgsz=imgsz,
                          conf=0.25, iou=0.7, verbose=False, persist=True):
        n += 1  # ultralytics as a user runs it: its own thread settings
        if res.boxes is not None and res.boxes.id is not None:
            ids.update(int(i) for i in res.boxes.id.tolist())
    return {"frames": n, "seconds": time.perf_counter() - t, "track_ids": len(ids), "peak_rss_mb": _peak_rss_mb()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=str(ASSETS / "video" / "ua-detrac-intersection.mp4"), help="input video")
    ap.add_argument("--model", default=str(ASSETS / "models" / "yolov8n_dynamic_int8.onnx"),
                    help="detector weights (anything ultralytics loads)")
    ap.add_argument("--tracker", choices=["bytetrack", "botsort"], default="bytetrack")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--frames", type=int, default=0, help="use only the first N frames (0 = all)")
    ap.add_argument("--worker", choices=["decode", "reidd", "ultralytics"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = {"decode": lambda: run_decode(args.video),
              "reidd": lambda: run_reidd(args.video, args.model, args.tracker, args.imgsz),
              "ultralytics": lambda: run_ultralytics(args.video, args.model, args.tracker, args.imgsz)}[args.worker]
        print("RESULT " + json.dumps(fn()))
        return 0
    for p in (args.video, args.model):
        if not Path(p).exists():
            print(f"not found: {p} (pass --video/--model)", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        video = _clip(args.video, args.frames, Path(tmp))
        results = {}
        for worker in ("decode", "reidd", "ultralytics"):
            cmd = [sys.executable, __file__, "--worker", worker, "--video", video, "--model", args.model,
                   "--tracker", args.tracker, "--imgsz", str(args.imgsz)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            results[worker] = json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT ")))
    d, r, u = results["decode"], results["reidd"], results["ultralytics"]
    st = r["stage_seconds"]
    fps_r, fps_u = r["frames"] / r["seconds"], u["frames"] / u["seconds"]
    n = r["frames"]
    print(f"video {Path(args.video).name}: {n} frames; model {Path(args.model).name}; tracker {args.tracker}; "
          f"{os.cpu_count()} CPU cores")
    print(f"{'':28}{'frames/s':>10}{'ms/frame':>10}{'peak RSS MB':>13}")
    print(f"{'decode only (OpenCV)':28}{d['frames'] / d['seconds']:10.1f}{1000 * d['seconds'] / d['frames']:10.2f}"
          f"{'':>13}")
    print(f"{'reidd decode+detect+track':28}{fps_r:10.1f}{1000 / fps_r:10.2f}{r['peak_rss_mb']:13.0f}")
    for stage in ("detect", "track", "tracklets"):
        print(f"{'  stage ' + stage:28}{'':10}{1000 * st[stage] / n:10.2f}")
    print(f"{'ultralytics YOLO.track()':28}{fps_u:10.1f}{1000 / fps_u:10.2f}{u['peak_rss_mb']:13.0f}")
    print(f"reidd / ultralytics throughput ratio: {fps_r / fps_u:.2f}x")
    summary = {
        "video": Path(args.video).name, "frames": n, "model": Path(args.model).name, "tracker": args.tracker,
        "decode_fps": round(d["frames"] / d["seconds"], 1), "reidd_fps": round(fps_r, 2),
        "ultralytics_fps": round(fps_u, 2), "ratio": round(fps_r / fps_u, 3),
        "stage_ms": {k: round(1000 * v / n, 2) for k, v in st.items()},
        "reidd_peak_rss_mb": round(r["peak_rss_mb"]), "ultralytics_peak_rss_mb": round(u["peak_rss_mb"]),
        "reidd_tracklets": r["tracklets"], "ultralytics_track_ids": u["track_ids"],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
