#!/usr/bin/env python
"""Benchmark of ``reidd adapt`` on the realistic scenes of ``scripts/bench_mtmc.py``.

For every seed and starting model: replay the scene with ground-truth boxes (``detector.type: file``) and the
starting model, adapt that model on the scene's own video (no labels), replay again with the adapted model,
and score both with ``../shared/bench/eval_scene.py``. Starting models: ``default`` (the ImageNet
EfficientNet-Lite0 the daemon uses without weights) and each ``--from`` checkpoint (e.g. a model from
``configs/train/vn2cam.yaml``, which never saw the scenes' held-out vehicles).

Prints a per-seed table, a mean table and a final JSON line. The scenes are built (and cached) by
bench_mtmc.py's code under ``--cache``. About 8 minutes per seed and starting model on 2 CPU cores.

    python scripts/bench_adapt.py [--seeds 11 12 13] [--from runs/vn2cam/best.pt] [--rounds 2 --epochs 6]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_mtmc as bm  # noqa: E402

COLS = ("idf1", "xcam_agreement", "false_merge_rate", "xcam_links")


def _row(res: dict) -> dict:
    return {"idf1": res["idf1"], "xcam_agreement": res["xcam_agreement"],
            "false_merge_rate": res.get("false_merge_rate") or 0.0, "xcam_links": res["xcam_links"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13], help="scene seeds (default 11 12 13)")
    ap.add_argument("--cache", default=str(ROOT / ".state" / "bench"), help="bench_mtmc's cache folder")
    ap.add_argument("--from", dest="starts", action="append", default=[], metavar="CKPT",
                    help="also adapt this checkpoint (repeatable); 'default' is always run unless --no-default")
    ap.add_argument("--no-default", action="store_true", help="skip the default (ImageNet) starting model")
    ap.add_argument("--rounds", type=int, default=2, help="reidd adapt --rounds (default 2)")
    ap.add_argument("--epochs", type=int, default=6, help="reidd adapt --epochs (default 6)")
    ap.add_argument("--tag", default="adapt", help="name of this benchmark's runs in the cache")
    args = ap.parse_args()
    if not (bm.BENCH / "build_scene.py").exists() or not bm.VN2CAM.exists():
        print(f"bench_adapt: needs {bm.BENCH} and {bm.VN2CAM}", file=sys.stderr)
        return 2
    cache = Path(args.cache).resolve()
    crops = bm.heldout_crops(cache)
    starts = ([("default", None)] if not args.no_default else []) + [(Path(s).stem, Path(s).resolve())
                                                                    for s in args.starts]
    table, per = [], {}
    for name, ckpt in starts:
        for seed in args.seeds:
            scene = bm.build_scene(cache, seed, crops)
            bm.gt_detections(scene)
            base = cache / "runs" / args.tag / name / str(seed)
            res = {}
            for stage, weights in (("before", ckpt), ("after", None)):
                run = base / stage
                if stage == "after":
                    adapted = base / "adapt"
                    cfg0 = bm.write_config(base / "adapt-cfg", scene, "gt", ckpt, [])
                    bm.log(f"{name} seed {seed}: reidd adapt")
                    cmd = [*bm.reidd_cmd(), "adapt", "--config", str(cfg0), "--out", str(adapted), "--rounds",
                           str(args.rounds), "--epochs", str(args.epochs), "--no-progress"]
                    r = subprocess.run(cmd, env=bm.env(), cwd=ROOT, capture_output=True, text=True)
                    (base / "adapt.log").write_text(r.stdout + r.stderr)
                    if r.returncode != 0:
                        raise RuntimeError(f"reidd adapt failed; see {base / 'adapt.log'}:\n{r.stderr[-2000:]}")
                    weights = adapted / "adapted.pt"
                cfg = bm.write_config(run, scene, "gt", weights, [])
                bm.log(f"{name} seed {seed}: replay {stage}")
                bm.replay(cfg, run)
                res[stage] = _row(bm.score(scene, run / "mtmc.txt"))
            rep = json.loads((base / "adapt" / "adapt.json").read_text())
            res["pairs"] = [r["cross_view_pairs"] for r in rep["rounds"]]
            res["seconds"] = rep["seconds"]
            table.append((f"{name} s{seed}", res))
            per.setdefault(name, []).append(res)
    hdr = f"{'start':<22}" + "".join(f"{c[:10]:>11}{'':>1}" for c in ("IDF1", "agree", "FMR")) * 2
    print("\nreidd adapt on the scene's own video (ground-truth boxes; eval_scene.py figures)")
    print(f"{'':<22}{'--- before ---':>36}{'--- after ---':>36}")
    print(hdr)
    print("-" * len(hdr))

    def line(label, b, a, extra=""):
        vals = [b["idf1"], b["xcam_agreement"], b["false_merge_rate"], a["idf1"], a["xcam_agreement"],
                a["false_merge_rate"]]
        print(f"{label:<22}" + "".join(f"{v:>11.3f} " for v in vals) + extra)

    for label, r in table:
        line(label, r["before"], r["after"], f"  pairs/round {r['pairs']}, {r['seconds']:.0f} s")
    means = {}
    for name, rs in per.items():
        m = {stage: {c: round(sum(r[stage][c] for r in rs) / len(rs), 4) for c in COLS} for stage in ("before", "after")}
        m["agreement_gain"] = round(m["after"]["xcam_agreement"] - m["before"]["xcam_agreement"], 4)
        means[name] = m
        line(f"{name} mean", m["before"], m["after"], f"  agreement {m['agreement_gain']:+.3f}")
    print(json.dumps({"bench": "adapt", "seeds": args.seeds, "rounds": args.rounds, "epochs": args.epochs,
                      "mean": means, "runs": {k: v for k, v in table}}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
