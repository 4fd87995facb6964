#!/usr/bin/env python
"""Does tracklet-level re-ranking pay for cross-camera association? Measured on the recorded embeddings.

``scripts/bench_mtmc.py`` records every embedded tracklet of its replays (``embeddings.jsonl``). For each
run of ``--tag`` (ground-truth boxes, every embedder, every seed) this script labels each tracklet with the
ground-truth vehicle its boxes cover (IoU >= 0.5, majority of boxes), and for every tracklet whose vehicle
was seen in the previous camera of the topology (c1 -> c2, c2 -> c3; transit 2-15 s as in the benchmark's
config) it ranks the candidates the matcher would consider (the previous camera's tracklets whose transit
falls in the window) with several appearance scores:

* ``cosine``      the raw cosine of the pooled embeddings;
* ``bias``        the cosine after camera-bias removal (each camera's mean embedding subtracted: the
                  daemon's score before calibration);
* ``bias+colour`` that plus the colour term with the daemon's weights (the daemon's ranking, minus
                  class and transit evidence);
* ``krr k1=K``    k-reciprocal re-ranking (Zhong et al. 2017; ``reidd.evaluate.rerank``) of the
                  bias-removed vectors, with every tracklet of both cameras in the neighbourhood: this
                  sees the future, so it is an upper bound of what an online version could do;
* ``qe`` / ``dba``  alpha query expansion / database augmentation (k=3, alpha=3) of the bias-removed
                  vectors within the pair's tracklets (also offline).

Figures per score, over all seeds: ``top-1`` (the true match ranks first among the in-window candidates),
``AP margin`` (average precision of ranking those queries by the lead of their best candidate over the
second: how well "close call, do not link" separates right from wrong), and ``mean cands``.
Prints a table, then one JSON line.

  .venv/bin/python scripts/bench_rerank.py --tag s17            # after bench_mtmc.py --detectors gt --tag s17
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reidd.config import MatchingConfig  # noqa: E402
from reidd.evaluate.rerank import database_augmentation, k_reciprocal_rerank, query_expansion  # noqa: E402
from reidd.match.recording import read_embedding_log  # noqa: E402
from reidd.reid.colour import colour_similarity  # noqa: E402

PAIRS = [("c1", "c2"), ("c2", "c3")]
WINDOW = (2.0, 15.0)


def _gt(path: Path) -> dict[tuple[str, int], list[tuple[int, float, float, float, float]]]:
    out: dict[tuple[str, int], list] = defaultdict(list)
    for line in path.read_text().splitlines():
        p = line.split()
        if len(p) >= 7:
            x, y, w, h = map(float, p[3:7])
            out[(p[0], int(p[2]))].append((int(p[1]), x, y, x + w, y + h))
    return out


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _label(boxes, cam: str, gt) -> int | None:
    votes: Counter[int] = Counter()
    for b in boxes:
        best, bid = 0.5, None
        for oid, *g in gt.get((cam, b.frame + 1), ()):  # tracklet frames are 0-based, gt.txt 1-based
            v = _iou(b.xyxy, g)
            if v >= best:
                best, bid = v, oid
        if bid is not None:
            votes[bid] += 1
    if not votes:
        return None
    oid, n = votes.most_common(1)[0]
    return oid if n >= 0.5 * len(boxes) else None


def _load(log: Path, gt) -> list[dict]:
    out = []
    for kind, item in read_embedding_log(log):
        if kind != "query":
            continue
        t = item.tracklet
        out.append({"cam": t.camera_id, "t0": t.first_ts, "t1": t.last_ts, "emb": item.embedding.astype(np.float64),
                    "colour": item.colour, "gid": _label(t.boxes, t.camera_id, gt)})
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _ap(correct: list[bool], lead: list[float]) -> float:
    if not correct:
        return float("nan")
    order = np.argsort(-np.asarray(lead), kind="stable")
    c = np.asarray(correct, float)[order]
    if c.sum() == 0:
        return 0.0
    prec = np.cumsum(c) / np.arange(1, len(c) + 1)
    return float((prec * c).sum() / c.sum())


def _scores(tracks: list[dict], cfg: MatchingConfig, k1s: list[int]) -> dict[str, list[tuple[bool, float, int]]]:
    """For every labelled query with its true match in window: (top-1 right, lead, candidates) per score."""
    res: dict[str, list] = defaultdict(list)
    means = {c: np.mean([t["emb"] for t in tracks if t["cam"] == c], axis=0) for c in {t["cam"] for t in tracks}}
    for src, dst in PAIRS:
        a = [t for t in tracks if t["cam"] == src]
        b = [t for t in tracks if t["cam"] == dst]
        if not a or not b:
            continue
        ea, eb = np.stack([t["emb"] for t in a]), np.stack([t["emb"] for t in b])
        raw = _unit(eb) @ _unit(ea).T
        ba, bb = _unit(ea - means[src]), _unit(eb - means[dst])
        bias = bb @ ba.T
        colour = np.array([[cfg.colour_weight * ((colour_similarity(q["colour"], c["colour"]) or cfg.colour_ref)
                                                 - cfg.colour_ref) for c in a] for q in b])
        scale = max(1.4826 * float(np.median(np.abs(bias - np.median(bias)))), 0.02)
        variants = {"cosine": raw, "bias": bias, "bias+colour": bias / scale + colour}
        for k1 in k1s:
            variants[f"krr k1={k1}"] = -k_reciprocal_rerank(bb, ba, k1=k1, k2=3, lambda_value=0.3, progress=False)
            variants[f"krr k1={k1}+colour"] = variants[f"krr k1={k1}"] / scale + colour
        pool = np.concatenate([ba, bb])
        variants["qe"] = query_expansion(bb, ba, k=3, alpha=3.0) @ ba.T
        dba = database_augmentation(pool, k=3, alpha=3.0)
        variants["dba"] = dba[len(ba):] @ dba[: len(ba)].T
        for i, q in enumerate(b):
            if q["gid"] is None:
                continue
            window = [j for j, c in enumerate(a) if WINDOW[0] <= q["t0"] - c["t1"] <= WINDOW[1]]
            truth = [j for j in window if a[j]["gid"] == q["gid"]]
            if not truth:
                continue
            for name, m in variants.items():
                s = m[i, window]
                order = np.argsort(-s, kind="stable")
                lead = float(s[order[0]] - s[order[1]]) if len(order) > 1 else float("inf")
                res[name].append((window[order[0]] in truth, min(lead, 1e6), len(window)))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--cache", type=Path, default=ROOT / ".state" / "bench", help="bench_mtmc.py's cache folder")
    ap.add_argument("--tag", required=True, help="the bench_mtmc.py --tag whose gt runs recorded embeddings")
    ap.add_argument("--seeds", type=int, nargs="+", default=[11, 12, 13])
    ap.add_argument("--embedders", nargs="+", default=["default", "trained"])
    ap.add_argument("--k1", type=int, nargs="+", default=[6, 12, 20], help="k-reciprocal k1 values")
    args = ap.parse_args(argv)
    cfg = MatchingConfig()
    table: dict[str, dict] = {}
    for emb in args.embedders:
        pooled: dict[str, list] = defaultdict(list)
        for seed in args.seeds:
            log = args.cache / "runs" / args.tag / "gt" / emb / str(seed) / "out" / "embeddings.jsonl"
            gt = args.cache / "scenes" / f"heldout-{seed}" / "gt.txt"
            if not log.is_file() or not gt.is_file():
                print(f"bench_rerank: missing {log if not log.is_file() else gt} (run bench_mtmc.py "
                      f"--detectors gt --tag {args.tag} first)", file=sys.stderr)
                return 2
            for name, rows in _scores(_load(log, _gt(gt)), cfg, args.k1).items():
                pooled[name].extend(rows)
        for name, rows in pooled.items():
            table[f"{emb} {name}"] = {"queries": len(rows), "top1": round(float(np.mean([r[0] for r in rows])), 4),
                                      "ap_margin": round(_ap([r[0] for r in rows], [r[1] for r in rows]), 4),
                                      "mean_cands": round(float(np.mean([r[2] for r in rows])), 2)}
    print(f"{'embedder score':<30} {'queries':>7} {'top-1':>7} {'AP margin':>9} {'mean cands':>10}")
    print("-" * 67)
    for name, r in table.items():
        print(f"{name:<30} {r['queries']:>7} {r['top1']:>7.4f} {r['ap_margin']:>9.4f} {r['mean_cands']:>10.2f}")
    print(json.dumps({"bench": "rerank", "tag": args.tag, "seeds": args.seeds, "results": table}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
