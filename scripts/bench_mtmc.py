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
model), ``yolo-onnx`` (the INT8 YOLOv8n ONNX model). Embedders: ``default`` (the configured default,
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
DETECTORS = {
    "gt": {"type": "file"},
    "motion": {"type": "motion"},
    "yolo": {"type": "yolo", "model": str(ASSETS / "models" / "yolo11n_int8_openvino_model")},
    "yolo-onnx": {"type": "yolo", "model": str(ASSETS / "models" / "yolov8n_dynamic_int8.onnx")},
}
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
           ("FMR", "false_merge_rate"), ("fps", "fps")]


def row_of(res: dict, fps: float) -> dict:
    r = {k: res[k] for k in ("idf1", "recall", "xcam_agreement", "xcam_links", "xcam_false_links", "xcam_transitions",
                             "xcam_agree", "false_merge_rate", "idp", "idr", "mota", "id_switches")}
    for c, v in res["idf1_per_camera"].items():
        r[f"idf1_{c}"] = v
    r["false_merge_rate"] = r["false_merge_rate"] or 0.0
    r["xcam_agreement"] = r["xcam_agreement"] or 0.0
    r["fps"] = round(fps, 1)
    return r


def print_table(title: str, rows: list[tuple[str, dict]]) -> None:
    print(f"\n{title}")
    head = f"{'run':<28}" + "".join(f"{h:>8}" for h, _ in COLUMNS)
    print(head)
    print("-" * len(head))
    for name, r in rows:
        cells = []
        for _, k in COLUMNS:
            v = r.get(k)
            cells.append(f"{'-':>8}" if v is None else (f"{v:>8d}" if isinstance(v, int) else f"{v:>8.3f}"
                                                          if k != "fps" else f"{v:>8.1f}"))
        print(f"{name:<28}" + "".join(cells))


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
    ap.add_argument("--detectors", nargs="+", default=["gt", "motion", "yolo"], choices=sorted(DETECTORS),
                    help="detector settings to run (default: gt motion yolo)")
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
    weights = trained_model(cache, args.weights) if "trained" in args.embedders else None
    per_setting: dict[str, list[dict]] = {}
    table: list[tuple[str, dict]] = []
    for det in args.detectors:
        if det != "gt" and not Path(DETECTORS[det]["model"] if "model" in DETECTORS[det] else ".").exists():
            log(f"skipping {det}: {DETECTORS[det]['model']} not found")
            continue
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
                r = row_of(score(scene, run / "mtmc.txt"), fps)
                (run / "score.json").write_text(json.dumps(r, indent=1))
                per_setting.setdefault(setting, []).append(r)
                table.append((f"{setting} s{seed}", r))
    print_table("per seed (scenes of held-out vn-2cam vehicles; eval_scene.py figures)", table)
    means = {k: mean_rows(v) for k, v in per_setting.items()}
    print_table(f"mean over seeds {' '.join(map(str, args.seeds))}", list(means.items()))
    print(json.dumps({"bench": "mtmc", "seeds": args.seeds, "overrides": args.overrides,
                      "weights": str(weights) if weights else None, "mean": means,
                      "runs": {n: r for n, r in table}}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
