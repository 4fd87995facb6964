#!/usr/bin/env python3
"""Realistic multi-camera benchmark: reidd end to end on dense 3-camera scenes of REAL vehicle crops.

Scenes come from ``../shared/bench/build_scene.py`` (real vn-2cam crops pasted on temporal medians of
real traffic clips, AI City MTMC ground truth) and are scored by ``../shared/bench/eval_scene.py``.
The vehicles in the scenes are the identities that the shipped training recipe
(``configs/train/vn2cam.yaml``) holds out for validation, so the trained model is measured on
vehicles it has never seen; the default (ImageNet) embedder has seen none of them either.

For every seed x detector x embedder it writes a cameras.yaml, runs ``reidd replay`` on it, scores the
MTMC output and prints a table (IDF1, per-camera IDF1, detection recall, cross-camera agreement,
false-merge rate, frames/s), then a mean-over-seeds table and a final JSON line.

Detectors: ``gt`` (the ground-truth boxes through ``detector.type: file``: tracking + re-ID +
association alone), ``motion`` (background subtraction), ``yolo`` (the shipped INT8 YOLO11n OpenVINO
model), ``yolo-onnx`` (the INT8 YOLOv8n ONNX model), ``omz-1016`` / ``omz-0078`` / ``omz-0202`` /
``omz-2004`` (Intel's Open Model Zoo detectors through ``detector.type: openvino``), ``omz-1016-motion``
(crossroad-1016 with ``detector.motion_assist``: the recommended set-up for fixed cameras).

Before the replays, every detector but ``gt`` is also measured alone (``--no-detection-stats`` skips it):
detection recall and precision at IoU 0.5 per camera against the ground truth (every 3rd frame; the
motion detector sees every frame and is scored on every 3rd), and ms per frame with the three cameras'
frames batched as the pipeline batches them. ``--clips`` counts each detector's boxes on the real clips in
../shared/assets/video (no ground truth there) and draws a contact sheet per clip to look at. Embedders: ``default`` (the configured default,
ImageNet EfficientNet-Lite0) and ``trained`` (the model from the shipped recipe, trained once into the
cache unless ``--weights`` names one).

Everything built (held-out crop folder, scenes, model, runs) is cached under ``--cache``
(default ``.state/bench``, ignored by git); a second call reuses it.

  .venv/bin/python scripts/bench_mtmc.py                                  # seeds 11 12 13, all settings
  .venv/bin/python scripts/bench_mtmc.py --detectors gt --embedders default --set matching.threshold=0.5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BENCH = SHARED / "bench"
ASSETS = SHARED / "assets"
VN2CAM = ASSETS / "reid" / "vn-2cam"
RECIPE = ROOT / "configs" / "train" / "vn2cam.yaml"
OMZ = ASSETS / "models" / "omz"
DETECTORS = {
    "gt": {"type": "file"},
    "motion": {"type": "motion"},
    "yolo": {"type": "yolo", "model": str(ASSETS / "models" / "yolo11n_int8_openvino_model")},
    "yolo-onnx": {"type": "yolo", "model": str(ASSETS / "models" / "yolov8n_dynamic_int8.onnx")},
    **{f"omz-{n[-4:]}": {"type": "openvino", "model": str(OMZ / n / "FP16-INT8" / f"{n}.xml")}
       for n in ("person-vehicle-bike-detection-crossroad-1016", "person-vehicle-bike-detection-crossroad-0078",
                 "vehicle-detection-0202", "person-vehicle-bike-detection-2004")},
}
# the recommended CPU set-up for fixed cameras: crossroad-1016 with background subtraction beside it
DETECTORS["omz-1016-motion"] = {**DETECTORS["omz-1016"], "motion_assist": True}
CLIPS = ("intel-car-detection.mp4", "ua-detrac-intersection.mp4", "highway-320x240.avi", "street-640x352.mp4")
EMBEDDERS = ("default", "trained")
FPS = 10.0


def log(msg: str) -> None:
    print(f"[bench_mtmc] {msg}", file=sys.stderr, flush=True)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.setdefault("YOLO_OFFLINE", "1")
    e.setdefault("YOLO_AUTOINSTALL", "0")
    e.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))
    return e


def reidd_cmd() -> list[str]:
    return [sys.executable, "-m", "reidd.cli"]


# --------------------------------------------------------------------------- inputs
def heldout_crops(cache: Path) -> Path:
    """A folder of links to the crops of the identities the shipped recipe holds out from training."""
    import yaml

    from reidd.train.datasets import load_dataset

    out = cache / "crops-heldout"
    if (out / ".done").exists():
        return out
    recipe = yaml.safe_load(RECIPE.read_text())
    ds = load_dataset(VN2CAM, recipe.get("layout", "csv"), val_identities=recipe.get("val_identities", 0.2),
                      seed=recipe.get("seed", 0), check_images=False)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for s in [*ds.query, *ds.gallery]:
        src = Path(s.path).resolve()
        dst = out / src.name
        if not dst.exists():
            dst.symlink_to(src)
        n += 1
    (out / ".done").write_text(str(n))
    log(f"held-out crops: {n} images of {len({s.pid for s in [*ds.query, *ds.gallery]})} identities -> {out}")
    return out


def build_scene(cache: Path, seed: int, crops: Path) -> Path:
    scene = cache / "scenes" / f"heldout-{seed}"
    if (scene / "gt.txt").exists() and (scene / "c3.mp4").exists():
        return scene
    log(f"building scene seed {seed} (about 2 min)")
    # 40 chains c1->c2 (20 go on to c3) and 10 one-camera distractors: the builder's defaults, 50 identities
    subprocess.run([sys.executable, str(BENCH / "build_scene.py"), "--seed", str(seed), "--scene", scene.name,
                    "--out", str(scene.parent), "--crops", str(crops)], check=True, stdout=subprocess.DEVNULL)
    return scene


def gt_detections(scene: Path) -> Path:
    """The ground-truth boxes as MOTChallenge detection files, one per camera (for ``detector.type: file``)."""
    out = scene / "dets-gt"
    if (out / ".done").exists():
        return out
    out.mkdir(exist_ok=True)
    rows: dict[str, list[tuple[int, str]]] = {}
    for line in (scene / "gt.txt").read_text().splitlines():
        p = line.split()
        if len(p) < 7:
            continue
        cam, frame, x, y, w, h = p[0], int(p[2]), *map(float, p[3:7])
        rows.setdefault(cam, []).append((frame, f"{frame},-1,{x:.1f},{y:.1f},{w:.1f},{h:.1f},1.0,-1,-1,-1"))
    for cam, lines in rows.items():
        lines.sort(key=lambda r: r[0])
        (out / f"{cam}.txt").write_text("".join(s + "\n" for _, s in lines))
    (out / ".done").write_text("ok")
    return out


def trained_model(cache: Path, weights: str | None) -> Path:
    if weights:
        return Path(weights).resolve()
    out = cache / f"model-{RECIPE.stem}"
    best = out / "best.pt"
    if best.exists():
        return best
    log(f"training the shipped recipe once ({RECIPE.relative_to(ROOT)}; about 11 minutes on 2 CPU cores)")
    subprocess.run([*reidd_cmd(), "train", "--config", str(RECIPE), "--out", str(out), "--no-progress"],
                   check=True, env=env(), cwd=ROOT)
    return best


# --------------------------------------------------------------------------- detectors alone
def detector_config(detector: str, overrides: list[str]):
    """The DetectorConfig a replay of ``detector`` would use (``--set detector.*`` applied)."""
    import yaml

    from reidd.config import DetectorConfig

    raw: dict = {"detector": dict(DETECTORS[detector])}
    for o in overrides:
        key, _, val = o.partition("=")
        if key.strip().startswith("detector."):
            set_path(raw, key.strip(), yaml.safe_load(val))
    return DetectorConfig(**raw["detector"])


def gt_boxes(scene: Path) -> dict[tuple[str, int], list[tuple[float, float, float, float]]]:
    """(camera, frame 1-based) -> ground-truth boxes x1, y1, x2, y2."""
    out: dict[tuple[str, int], list] = {}
    for line in (scene / "gt.txt").read_text().splitlines():
        p = line.split()
        if len(p) >= 7:
            x, y, w, h = map(float, p[3:7])
            out.setdefault((p[0], int(p[2])), []).append((x, y, x + w, y + h))
    return out


def match_count(pred, gt, iou_min: float = 0.5) -> int:
    """Boxes of ``pred`` matched one-to-one to ``gt`` at IoU >= ``iou_min`` (optimal assignment)."""
    import lap
    import numpy as np

    if not len(pred) or not len(gt):
        return 0
    a, b = np.asarray(pred, np.float64).reshape(-1, 4), np.asarray(gt, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    iou = inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)
    _, x, _ = lap.lapjv(1.0 - iou, extend_cost=True, cost_limit=1.0 - iou_min + 1e-9)
    return int(sum(1 for i, j in enumerate(x) if j >= 0 and iou[i, j] >= iou_min))


def detection_stats(cache: Path, seed: int, detector: str, overrides: list[str], every: int = 3) -> dict:
    """Recall and precision at IoU 0.5 per camera (all boxes the tracker gets, and those at or above
    tracker.track_high_thresh 0.25) and ms per frame of ``detector`` alone on a scene. Cached per settings."""
    import hashlib
    import time

    import cv2

    from reidd.detect.base import build_detector
    from reidd.types import Frame

    key = hashlib.sha1(json.dumps([detector, DETECTORS[detector], sorted(o for o in overrides
                                   if o.startswith("detector."))]).encode()).hexdigest()[:10]
    path = cache / "detstats" / f"{detector}-{key}-{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    scene = cache / "scenes" / f"heldout-{seed}"
    cams = ("c1", "c2", "c3")
    det = build_detector(detector_config(detector, overrides), list(cams))
    truth = gt_boxes(scene)
    caps = {c: cv2.VideoCapture(str(scene / f"{c}.mp4")) for c in cams}
    counts = {c: {"gt": 0, "pred": 0, "tp": 0, "pred25": 0, "tp25": 0} for c in cams}
    seconds = 0.0
    frames = 0
    index = 0
    while True:
        batch = []
        for c in cams:
            ok, img = caps[c].read()
            if ok:
                batch.append(Frame(c, index, index / FPS, img))
        if not batch:
            break
        scored = index % every == 0
        if scored or detector == "motion":  # background subtraction needs every frame
            t0 = time.perf_counter()
            out = det.detect(batch)
            seconds += time.perf_counter() - t0
            frames += len(batch)
            if scored:
                for f, d in zip(batch, out):
                    g = truth.get((f.camera_id, index + 1), [])
                    n = counts[f.camera_id]
                    hi = d[d.conf >= 0.25]
                    n["gt"] += len(g)
                    n["pred"] += len(d)
                    n["tp"] += match_count(d.xyxy, g)
                    n["pred25"] += len(hi)
                    n["tp25"] += match_count(hi.xyxy, g)
        index += 1
    for cap in caps.values():
        cap.release()
    res: dict = {"ms_per_frame": round(1000 * seconds / max(frames, 1), 2)}
    for c, n in counts.items():
        res[f"recall_{c}"] = round(n["tp"] / max(n["gt"], 1), 4)
        res[f"precision_{c}"] = round(n["tp"] / max(n["pred"], 1), 4)
        res[f"recall25_{c}"] = round(n["tp25"] / max(n["gt"], 1), 4)
        res[f"precision25_{c}"] = round(n["tp25"] / max(n["pred25"], 1), 4)
    tot = {k: sum(n[k] for n in counts.values()) for k in ("gt", "pred", "tp", "pred25", "tp25")}
    res["recall"] = round(tot["tp"] / max(tot["gt"], 1), 4)
    res["precision"] = round(tot["tp"] / max(tot["pred"], 1), 4)
    res["recall25"] = round(tot["tp25"] / max(tot["gt"], 1), 4)
    res["precision25"] = round(tot["tp25"] / max(tot["pred25"], 1), 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    return res


DET_COLUMNS = [("recall", "recall"), ("R c1", "recall_c1"), ("R c2", "recall_c2"), ("R c3", "recall_c3"),
               ("prec", "precision"), ("P c1", "precision_c1"), ("P c2", "precision_c2"), ("P c3", "precision_c3"),
               ("R@.25", "recall25"), ("P@.25", "precision25"), ("ms/fr", "ms_per_frame")]


def clip_counts(cache: Path, detectors: list[str], overrides: list[str], every: int = 5) -> dict:
    """Boxes per frame (confidence >= 0.25, by class) of each detector on the real clips, and one contact sheet
    per clip (a frame with each detector's boxes) in ``cache``/clips/ to look at."""
    import cv2
    import numpy as np

    from reidd.detect.base import build_detector
    from reidd.types import Frame

    out: dict = {}
    sheets = cache / "clips"
    sheets.mkdir(parents=True, exist_ok=True)
    names = {0: "rider", 2: "car", 3: "moto", 5: "bus", 7: "truck"}
    for clip in CLIPS:
        path = ASSETS / "video" / clip
        if not path.exists():
            continue
        n_frames = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
        middle = (n_frames // every // 2) * every  # the frame the contact sheet shows
        tiles = []
        for name in detectors:
            cfg = detector_config(name, overrides)
            det = build_detector(cfg, ["clip"])
            every_frame = cfg.type == "motion" or cfg.motion_assist  # a background model needs every frame
            results, shown, batch = [], None, []
            cap = cv2.VideoCapture(str(path))  # streamed: a clip's frames need not fit in memory
            k = 0
            while True:
                ok, img = cap.read()
                if ok and (every_frame or k % every == 0):
                    batch.append(Frame("clip", k, k / 25.0, img))
                if batch and (not ok or len(batch) == (1 if every_frame else 4)):
                    for f, d in zip(batch, det.detect(batch)):
                        if f.index % every == 0:
                            results.append(d)
                        if f.index == middle or shown is None:  # the middle frame (the first until then)
                            shown = (f, d)
                    batch = []
                if not ok:
                    break
                k += 1
            cap.release()
            per_class: dict[str, float] = {}
            for d in results:
                hi = d[d.conf >= 0.25]
                for c in hi.cls:
                    per_class[names.get(int(c), str(int(c)))] = per_class.get(names.get(int(c), str(int(c))), 0) + 1
            out.setdefault(clip, {})[name] = {
                "all_per_frame": round(sum(len(d) for d in results) / len(results), 2),
                "boxes_per_frame": round(sum(per_class.values()) / len(results), 2),
                **{k: round(v / len(results), 2) for k, v in sorted(per_class.items())}}
            img = shown[0].image.copy()
            d = shown[1]
            for (x1, y1, x2, y2), cf, c in zip(d.xyxy.astype(int), d.conf, d.cls):
                colour = (0, 255, 0) if cf >= 0.25 else (0, 165, 255)
                cv2.rectangle(img, (x1, y1), (x2, y2), colour, 1)
                cv2.putText(img, f"{names.get(int(c), int(c))} {cf:.2f}", (x1, max(8, y1 - 2)),
                            cv2.FONT_HERSHEY_PLAIN, 0.8, colour, 1)
            cv2.putText(img, name, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
            tiles.append(img)
        cols = 2
        while len(tiles) % cols:
            tiles.append(np.zeros_like(tiles[0]))
        grid = np.vstack([np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)])
        cv2.imwrite(str(sheets / f"{Path(clip).stem}.jpg"), grid, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return out


# --------------------------------------------------------------------------- runs
TOPOLOGY = [  # the scene's topology with a margin around its 3-12 s transits, as an operator would write it
    {"src": "c1", "dst": "c2", "min_s": 2.0, "max_s": 15.0, "bidirectional": False},
    {"src": "c2", "dst": "c3", "min_s": 2.0, "max_s": 15.0, "bidirectional": False},
]


def set_path(cfg: dict, dotted: str, value) -> None:
    node = cfg
    *parents, leaf = dotted.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = value


def write_config(run: Path, scene: Path, detector: str, weights: Path | None, overrides: list[str]) -> Path:
    import yaml

    cfg: dict = {
        "cameras": [{"id": c, "url": str(scene / f"{c}.mp4")} for c in ("c1", "c2", "c3")],
        "detector": dict(DETECTORS[detector]),
        "matching": {"topology": TOPOLOGY},
        "metrics": {"enabled": False},
        "logging": {"level": "WARNING"},
    }
    if detector == "gt":
        cfg["detector"]["detections_dir"] = str(scene / "dets-gt")
    if weights is not None:
        cfg["reid"] = {"weights": str(weights)}  # the checkpoint carries its input size and architecture
    for o in overrides:
        key, _, val = o.partition("=")
        set_path(cfg, key.strip(), yaml.safe_load(val))
    run.mkdir(parents=True, exist_ok=True)
    path = run / "cameras.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def score(scene: Path, pred: Path) -> dict:
    res = subprocess.run([sys.executable, str(BENCH / "eval_scene.py"), "--gt", str(scene / "gt.txt"),
                          "--pred", str(pred)], check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def replay(cfg_path: Path, run: Path) -> float:
    """Run ``reidd replay``; return the pipeline's frames per second."""
    out = run / "out"
    cmd = [*reidd_cmd(), "replay", "--config", str(cfg_path), "--out", str(out), "--no-crops", "--save-embeddings",
           "--output-mtmc", str(run / "mtmc.txt"), "--events-jsonl", str(run / "events.jsonl")]
    (run / "events.jsonl").unlink(missing_ok=True)
    res = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True)
    (run / "replay.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"reidd replay failed ({res.returncode}) for {cfg_path}; see {run / 'replay.log'}:\n"
                           + (res.stdout + res.stderr)[-2000:])
    summary = json.loads((out / "summary.json").read_text())
    return summary["frames"] / max(summary["wall_seconds"], 1e-9)


def rematch(cfg_path: Path, run: Path, source: Path) -> float:
    """Re-run only the association on ``source``'s recorded embeddings; return the source's frames/s."""
    (run / "events.jsonl").unlink(missing_ok=True)
    cmd = [*reidd_cmd(), "rematch", "--config", str(cfg_path), "--embeddings", str(source / "out" / "embeddings.jsonl"),
           "--out", str(run / "rematch"), "--output-mtmc", str(run / "mtmc.txt"), "--events-jsonl",
           str(run / "events.jsonl")]
    res = subprocess.run(cmd, env=env(), cwd=ROOT, capture_output=True, text=True)
    (run / "rematch.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"reidd rematch failed ({res.returncode}); see {run / 'rematch.log'}:\n"
                           + (res.stdout + res.stderr)[-2000:])
    summary = json.loads((source / "out" / "summary.json").read_text())
    return summary["frames"] / max(summary["wall_seconds"], 1e-9)


COLUMNS = [("IDF1", "idf1"), ("c1", "idf1_c1"), ("c2", "idf1_c2"), ("c3", "idf1_c3"), ("recall", "recall"),
           ("agree", "xcam_agreement"), ("links", "xcam_links"), ("false", "xcam_false_links"),
           ("FMR", "false_merge_rate"), ("lat50", "latency_p50_s"), ("lat95", "latency_p95_s"), ("fps", "fps")]


def decision_latency(events: Path) -> dict:
    """p50 / p95 of ``association.decided_ts - last_ts`` over the tracklet events (seconds of media time)."""
    import numpy as np

    lat = []
    for line in events.read_text().splitlines() if events.exists() else []:
        ev = json.loads(line)
        decided = (ev.get("association") or {}).get("decided_ts") if ev.get("type") == "tracklet" else None
        if decided is not None:
            lat.append(decided - ev["last_ts"])
    if not lat:
        return {"latency_p50_s": None, "latency_p95_s": None}
    return {"latency_p50_s": round(float(np.percentile(lat, 50)), 3),
            "latency_p95_s": round(float(np.percentile(lat, 95)), 3)}


def row_of(res: dict, fps: float) -> dict:
    r = {k: res[k] for k in ("idf1", "recall", "xcam_agreement", "xcam_links", "xcam_false_links", "xcam_transitions",
                             "xcam_agree", "false_merge_rate", "idp", "idr", "mota", "id_switches")}
    for c, v in res["idf1_per_camera"].items():
        r[f"idf1_{c}"] = v
    r["false_merge_rate"] = r["false_merge_rate"] or 0.0
    r["xcam_agreement"] = r["xcam_agreement"] or 0.0
    r["fps"] = round(fps, 1)
    return r


def print_table(title: str, rows: list[tuple[str, dict]], columns: list[tuple[str, str]] | None = None,
                label: str = "run", width: int = 28) -> None:
    """Rows of figures under their column headings: counts as integers, rates with 3 decimals, speeds with 1."""
    columns = columns or COLUMNS
    print(f"\n{title}")
    head = f"{label:<{width}}" + "".join(f"{h:>8}" for h, _ in columns)
    print(head)
    print("-" * len(head))
    for name, r in rows:
        cells = []
        for _, k in columns:
            v = r.get(k)
            cells.append(f"{'-':>8}" if v is None else f"{v:>8d}" if isinstance(v, int) else
                         f"{v:>8.1f}" if k in ("fps", "ms_per_frame", "latency_p50_s", "latency_p95_s") else f"{v:>8.3f}")
        print(f"{name:<{width}}" + "".join(cells))


def mean_rows(rows: list[dict]) -> dict:
    out = {}
    for k in rows[0]:
        vals = [r[k] for r in rows if r.get(k) is not None]
        if vals and all(isinstance(v, (int, float)) for v in vals):
            m = sum(vals) / len(vals)
            out[k] = round(m, 4) if not all(isinstance(v, int) for v in vals) else round(m, 1)
    # pooled rates (every link and transition of every seed counts once)
    links = sum(r["xcam_links"] for r in rows)
    trans = sum(r["xcam_transitions"] for r in rows)
    out["false_merge_rate_pooled"] = round(sum(r["xcam_false_links"] for r in rows) / links, 4) if links else 0.0
    out["xcam_agreement_pooled"] = round(sum(r["xcam_agree"] for r in rows) / trans, 4) if trans else 0.0
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13], help="scene seeds (default 11 12 13)")
    ap.add_argument("--cache", default=str(ROOT / ".state" / "bench"), help="cache folder (scenes, model, runs)")
    ap.add_argument("--detectors", nargs="+", default=list(DETECTORS), choices=list(DETECTORS),
                    help="detector settings to run (default: all: %(default)s)")
    ap.add_argument("--embedders", nargs="+", default=list(EMBEDDERS), choices=EMBEDDERS,
                    help="embedders to run (default: default trained)")
    ap.add_argument("--weights", default=None, help="trained re-ID checkpoint to use instead of training one")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every run, e.g. --set matching.threshold=0.5 (repeatable)")
    ap.add_argument("--tag", default="", help="name of this configuration in the cache (runs/<tag>...)")
    ap.add_argument("--rematch-from", default=None, metavar="TAG",
                    help="reuse the embeddings recorded by the runs of TAG and re-run only the association "
                         "(reidd rematch): for tuning the matching settings in seconds")
    ap.add_argument("--build-only", action="store_true", help="build the held-out crops and scenes, then stop")
    ap.add_argument("--no-detection-stats", action="store_true",
                    help="skip measuring each detector alone (recall/precision per camera, ms per frame)")
    ap.add_argument("--no-replay", action="store_true", help="only the detectors alone (and --clips): no replays")
    ap.add_argument("--clips", action="store_true",
                    help="also count each detector's boxes on the real clips and draw contact sheets (CACHE/clips/)")
    args = ap.parse_args(argv)
    if not (BENCH / "build_scene.py").exists() or not VN2CAM.exists():
        print(f"bench_mtmc: needs {BENCH} and {VN2CAM} (the shared benchmark tools and crops)", file=sys.stderr)
        return 2
    cache = Path(args.cache).resolve()
    crops = heldout_crops(cache)
    for s in args.seeds:
        gt_detections(build_scene(cache, s, crops))
    if args.build_only:
        return 0
    weights = trained_model(cache, args.weights) if "trained" in args.embedders and not args.no_replay else None
    per_setting: dict[str, list[dict]] = {}
    table: list[tuple[str, dict]] = []
    detectors = []
    for det in args.detectors:
        if det != "gt" and not Path(DETECTORS[det]["model"] if "model" in DETECTORS[det] else ".").exists():
            log(f"skipping {det}: {DETECTORS[det]['model']} not found")
            continue
        detectors.append(det)
    det_rows: dict[str, dict] = {}
    if not args.no_detection_stats:
        det_table = []
        for det in (d for d in detectors if d != "gt"):
            per_seed = []
            for seed in args.seeds:
                log(f"{det} seed {seed}: detector alone")
                per_seed.append(detection_stats(cache, seed, det, args.overrides))
                det_table.append((f"{det} s{seed}", per_seed[-1]))
            det_rows[det] = {k: round(sum(r[k] for r in per_seed) / len(per_seed), 4) for k in per_seed[0]}
        if det_table:
            print_table("detectors alone, per seed (IoU 0.5, every 3rd frame; R/P: every box the tracker gets, "
                        "@.25: confidence >= 0.25)", det_table, DET_COLUMNS, "detector", 20)
            print_table(f"detectors alone, mean over seeds {' '.join(map(str, args.seeds))}", list(det_rows.items()),
                        DET_COLUMNS, "detector", 20)
    clips = clip_counts(cache, [d for d in detectors if d != "gt"], args.overrides) if args.clips else {}
    if clips:
        print(f"\nboxes per frame on the real clips (all: every box the tracker gets; the rest: confidence >= 0.25, "
              f"by class); contact sheets in {cache / 'clips'}")
        for clip, by_det in clips.items():
            for det, c in by_det.items():
                print(f"  {clip:<28} {det:<10} " + " ".join(f"{k}={v}" for k, v in c.items()))
    if args.no_replay:
        print(json.dumps({"bench": "mtmc", "seeds": args.seeds, "overrides": args.overrides, "detectors": det_rows,
                          "clips": clips}, sort_keys=True))
        return 0
    for det in detectors:
        for emb in args.embedders:
            setting = f"{det}/{emb}"
            for seed in args.seeds:
                scene = cache / "scenes" / f"heldout-{seed}"
                run = cache / "runs" / (args.tag or "default") / det / emb / str(seed)
                cfg_path = write_config(run, scene, det, weights if emb == "trained" else None, args.overrides)
                if args.rematch_from:
                    fps = rematch(cfg_path, run, cache / "runs" / args.rematch_from / det / emb / str(seed))
                else:
                    log(f"{setting} seed {seed}: replay")
                    fps = replay(cfg_path, run)
                r = {**row_of(score(scene, run / "mtmc.txt"), fps), **decision_latency(run / "events.jsonl")}
                (run / "score.json").write_text(json.dumps(r, indent=1))
                per_setting.setdefault(setting, []).append(r)
                table.append((f"{setting} s{seed}", r))
    print_table("per seed (scenes of held-out vn-2cam vehicles; eval_scene.py figures)", table)
    means = {k: mean_rows(v) for k, v in per_setting.items()}
    print_table(f"mean over seeds {' '.join(map(str, args.seeds))}", list(means.items()))
    print(json.dumps({"bench": "mtmc", "seeds": args.seeds, "overrides": args.overrides,
                      "weights": str(weights) if weights else None, "mean": means, "detectors": det_rows,
                      "clips": clips, "runs": {n: r for n, r in table}}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
