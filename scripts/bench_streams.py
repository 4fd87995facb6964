#!/usr/bin/env python3
"""Benchmark: how many 1080p cameras at a given frame rate one machine sustains end to end.

Makes a 1080p clip (the shared traffic clip scaled up, ``--seconds`` long at ``--fps``), then for each
camera count N replays N cameras of it through the whole daemon path (decode, detection batched across
cameras, tracking, tracklets, re-ID embedding, gallery, matching, events to an embedded Redis) in a fresh
subprocess, as fast as the machine allows. N cameras at ``--fps`` are sustained when the aggregate
throughput is at least N x ``--fps`` frames/s. Also times the embedder alone (crops/s) and, when FAISS has
GPU support, a 1e6-entry GPU search. Prints a table and a final JSON line.

Detector: ``--model``: an OpenVINO IR ``.xml`` (or a folder holding one; ``detector.type: openvino``, e.g. Intel's
person-vehicle-bike-detection-crossroad-1016, the recommended CPU detector) or anything ultralytics loads
(``detector.type: yolo``; an ultralytics ``*_openvino_model`` export folder is one of these). Without one it uses
the shared INT8 YOLO11n OpenVINO model on CPU; on CUDA, where that model cannot run, it builds YOLO11n from
ultralytics' bundled architecture with random weights: the network's cost is the real one, but it finds almost
nothing, so tracking and re-ID then carry no load and the embedder figure is the one that bounds re-ID (see the
table's note). ``--detector key=value`` sets any other ``detector`` field (YAML values), e.g.
``--detector gate=true``.

  scripts/bench_streams.py --device cuda --half --cameras 1,4,8,16,32      # on a GPU machine
  scripts/bench_streams.py --device cpu --cameras 1,2 --seconds 3           # a quick CPU run
  scripts/bench_streams.py --device cpu --cameras 1,2,4 --seconds 5 \
      --model ../shared/assets/models/omz/person-vehicle-bike-detection-crossroad-1016/FP16-INT8/person-vehicle-bike-detection-crossroad-1016.xml
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"
CLIP = ASSETS / "video" / "ua-detrac-intersection.mp4"
OV_MODEL = ASSETS / "models" / "yolo11n_int8_openvino_model"


def _env() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))


def _counts(text: str) -> list[int]:
    try:
        out = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cameras: expected comma-separated integers, got {text!r}")
    if not out or out[0] < 1:
        raise argparse.ArgumentTypeError(f"--cameras: every count must be >= 1, got {text!r}")
    return out


def make_clip(src: Path, out: Path, seconds: float, fps: float) -> Path:
    """``seconds`` of ``src`` at ``fps``, scaled to 1920x1080 (looped when the source is shorter)."""
    import cv2

    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise SystemExit(f"bench_streams: cannot read {src}")
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (1920, 1080))
    for _ in range(max(1, round(seconds * fps))):
        ok, img = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, img = cap.read()
            if not ok:
                raise SystemExit(f"bench_streams: no frame could be read from {src}")
        writer.write(cv2.resize(img, (1920, 1080), interpolation=cv2.INTER_LINEAR))
    writer.release()
    return out


def detector_type(model: str) -> str:
    """``openvino`` for an IR ``.xml`` or a folder holding one (but not an ultralytics export folder, which carries
    its ``metadata.yaml``), else ``yolo``."""
    p = Path(model)
    if p.suffix.lower() == ".xml":
        return "openvino"
    if p.is_dir() and any(p.glob("*.xml")) and not (p / "metadata.yaml").exists():
        return "openvino"
    return "yolo"


def _refuse(message: str) -> None:
    """A bad argument: one line on stderr, exit status 2."""
    print(f"bench_streams: {message}", file=sys.stderr)
    raise SystemExit(2)


def _options(items: list[str]) -> dict:
    """``key=value`` pairs (values read as YAML: ``true``, ``3``, ``{every: 5}``) as a dict."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _refuse(f"--detector: expected key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            _refuse(f"--detector {key.strip()}: not a YAML value ({exc.__class__.__name__})")
    return out


def check_options(options: dict) -> None:
    """Refuse, before any run, a ``--detector`` field the config does not have or a value it does not take."""
    from pydantic import ValidationError

    from reidd.config import DetectorConfig

    try:
        DetectorConfig.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        _refuse(f"--detector {where}: {err['msg']}")


def random_yolo(path: Path) -> Path:
    """YOLO11n from ultralytics' bundled architecture, random weights, saved as a checkpoint."""
    from ultralytics import YOLO

    YOLO("yolo11n.yaml", task="detect").save(str(path))
    return path


def worker(args: argparse.Namespace) -> dict:
    """One replay of ``args.n`` cameras (in this process)."""
    _env()
    import contextlib
    import io

    from reidd.config import parse_config
    from reidd.daemon import run_replay
    from reidd.telemetry import Metrics

    out = Path(args.out)
    cfg = parse_config({
        "cameras": [{"id": f"cam{i:02d}", "url": args.clip} for i in range(args.n)],
        "detector": {"type": detector_type(args.model), "model": args.model, "device": args.device,
                     "half": args.half, "max_batch": min(args.n, args.max_batch), "tiles": 1,
                     "trust_pickle": args.trust_generated, **_options(args.detector)},
        "reid": {"device": args.device, "enabled": not args.no_reid},
        "gallery": {"state_dir": str(out / "state")},
        "metrics": {"enabled": False},
    }, "bench_streams", str(out))
    with contextlib.redirect_stdout(io.StringIO()):
        _, result = run_replay(cfg, out / "run", metrics=Metrics(), save_crops=False)
    import resource

    return {"frames": result.frames, "seconds": result.wall_seconds, "stage_seconds": result.stage_seconds,
            "tracklets": sum(c.tracklets for c in result.cameras.values()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def embedder_rate(device: str, batch: int = 64, rounds: int = 5) -> dict:
    """Crops per second of the default embedder on ``device`` (224x224 crops from real-sized boxes)."""
    import numpy as np

    from reidd.config import ReidConfig
    from reidd.reid.embedder import Embedder

    emb = Embedder(ReidConfig(device=device))
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (96 + i % 64, 128 + i % 96, 3), dtype=np.uint8) for i in range(batch)]
    emb.embed_crops(crops)  # warm-up (CUDA kernels, ONNX sessions)
    t = time.perf_counter()
    for _ in range(rounds):
        emb.embed_crops(crops)
    dt = time.perf_counter() - t
    return {"device": str(emb.device), "runtime": emb.backend.name,
            "dtype": str(emb.dtype).replace("torch.", ""), "crops_per_s": round(batch * rounds / dt, 1)}


def faiss_gpu(n: int = 1_000_000, d: int = 256, nq: int = 1000) -> dict | None:
    """Exact search of ``nq`` queries over ``n`` entries on the GPU, when FAISS has GPU support."""
    import faiss
    import numpy as np

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    res = faiss.StandardGpuResources()
    index = faiss.GpuIndexFlatIP(res, d)
    index.add(x)
    q = x[:nq]
    index.search(q[:10], 10)
    t = time.perf_counter()
    for i in range(nq):
        index.search(q[i : i + 1], 10)
    single = (time.perf_counter() - t) / nq * 1000
    t = time.perf_counter()
    index.search(q, 10)
    return {"entries": n, "single_query_ms": round(single, 3),
            "batched_queries_per_s": round(nq / (time.perf_counter() - t), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (detector and embedder)")
    ap.add_argument("--half", action="store_true", help="fp16 detector (CUDA only)")
    ap.add_argument("--model", default="", help="detector: an OpenVINO IR .xml or anything ultralytics loads "
                    "(default: see above)")
    ap.add_argument("--detector", action="append", default=[], metavar="KEY=VALUE",
                    help="another detector field for every run (repeatable), e.g. gate=true")
    ap.add_argument("--cameras", type=_counts, default=_counts("1,2,4,8"), help="camera counts to try")
    ap.add_argument("--fps", type=float, default=10.0, help="frame rate each camera must sustain")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the clip each camera replays")
    ap.add_argument("--max-batch", type=int, default=16, help="most frames in one detector call")
    ap.add_argument("--no-reid", action="store_true",
                    help="decode, detection and tracking only (to see what re-ID costs on top)")
    ap.add_argument("--video", default=str(CLIP), help="source clip (scaled to 1080p)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per camera count")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--trust-generated", action="store_true", help=argparse.SUPPRESS)  # the model is ours
    args = ap.parse_args()
    _env()
    if args.worker:
        print("RESULT " + json.dumps(worker(args)))
        return 0
    from reidd.device import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        print(f"bench_streams: --device: {exc}", file=sys.stderr)
        return 2
    if args.fps <= 0 or args.seconds <= 0 or args.max_batch < 1:
        print("bench_streams: --fps and --seconds must be > 0, --max-batch >= 1", file=sys.stderr)
        return 2
    if not Path(args.video).is_file():
        print(f"bench_streams: --video: not found: {args.video}", file=sys.stderr)
        return 2
    options = _options(args.detector)  # refused here, before any run, when malformed
    check_options(options)
    note = ""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model, generated = args.model, False
        if not model:
            if device == "cpu" and OV_MODEL.exists():
                model = str(OV_MODEL)
            else:
                model, generated = str(random_yolo(tmp / "yolo11n-random.pt")), True
                note = ("detector: YOLO11n with random weights (no .pt given): real network cost, almost no "
                        "detections, so tracking and re-ID carry no load here; the embedder's crops/s bounds re-ID")
        elif not Path(model).exists():
            print(f"bench_streams: --model: not found: {model}", file=sys.stderr)
            return 2
        print(f"[bench_streams] making a {args.seconds:g} s 1080p clip at {args.fps:g} frames/s", flush=True)
        clip = make_clip(Path(args.video), tmp / "clip1080.mp4", args.seconds, args.fps)
        rows = []
        for n in args.cameras:
            print(f"[bench_streams] {n} camera(s)", flush=True)
            cmd = [sys.executable, __file__, "--worker", "--n", str(n), "--clip", str(clip), "--out",
                   str(tmp / f"n{n}"), "--model", model, "--device", device, "--max-batch", str(args.max_batch)]
            cmd += [f"--detector={item}" for item in args.detector]
            if args.no_reid:
                cmd.append("--no-reid")
            if args.half:
                cmd.append("--half")
            if generated:
                cmd.append("--trust-generated")
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"[bench_streams] {n} camera(s): over {args.timeout:g} s, stopping here", flush=True)
                break
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                print(f"bench_streams: the {n}-camera run failed (exit {proc.returncode})", file=sys.stderr)
                return 1
            r = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
            fps = r["frames"] / r["seconds"]
            st = {k: round(1000 * v / max(r["frames"], 1), 3) for k, v in r["stage_seconds"].items()}
            rows.append({"cameras": n, "fps": round(fps, 1), "per_camera_fps": round(fps / n, 1),
                         "sustained": fps >= n * args.fps, "stage_ms_per_frame": st, "tracklets": r["tracklets"],
                         "peak_rss_mb": round(r["peak_rss_mb"])})
        emb = embedder_rate(device)
        fg = faiss_gpu() if device.startswith("cuda") else None
    dtype = detector_type(model)
    extra = "".join(f", {k}={v}" for k, v in options.items())
    print(f"\n1080p cameras at {args.fps:g} frames/s on {device}; detector {Path(model).name} ({dtype}{extra})"
          f"{' fp16' if args.half else ''}; {os.cpu_count()} CPU cores")
    print(f"{'cameras':>8}{'frames/s':>10}{'per cam':>9}{'sustained':>11}{'detect':>9}{'track':>8}"
          f"{'re-ID':>8}{'RSS MB':>8}")
    for r in rows:
        st = r["stage_ms_per_frame"]
        print(f"{r['cameras']:>8}{r['fps']:>10.1f}{r['per_camera_fps']:>9.1f}{'yes' if r['sustained'] else 'no':>11}"
              f"{st.get('detect', 0):>9.2f}{st.get('track', 0):>8.2f}{st.get('reid_worker', 0):>8.2f}"
              f"{r['peak_rss_mb']:>8}")
    print("(ms per frame; detect runs batched across cameras, re-ID on its own worker)")
    best = max((r["cameras"] for r in rows if r["sustained"]), default=0)
    print(f"sustained: {best} camera(s) at {args.fps:g} frames/s; embedder {emb['crops_per_s']} crops/s "
          f"({emb['runtime']}, {emb['dtype']} on {emb['device']})")
    if fg:
        print(f"faiss GPU, {fg['entries']} entries: {fg['single_query_ms']} ms per single query, "
              f"{fg['batched_queries_per_s']} queries/s batched")
    if note:
        print(note)
    print(json.dumps({"bench": "streams", "device": device, "model": Path(model).name, "detector_type": dtype,
                      "detector_options": options, "reid": not args.no_reid, "half": args.half,
                      "target_fps": args.fps, "rows": rows, "sustained_cameras": best, "embedder": emb,
                      "faiss_gpu": fg, "note": note}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
