"""Multi-target multi-camera (MTMC) scoring in the AI City Challenge way, plus cross-camera checks.

Files are in MTMC format (read by :func:`reidd.formats.mtmc.read_mtmc`: ``camera_id obj_id frame_id xmin
ymin width height``, camera ids canonicalised, ``obj_id`` the global identity across cameras).

Scoring: every camera's frames are put one after the other on one timeline (each camera's frame ids
are offset so cameras never overlap) and scored as one sequence with ``motmetrics`` at IoU >= ``iou``.
IDF1/IDP/IDR, MOTA, precision/recall and id switches therefore count a global id that changes between
cameras. On top of that:

* cross-camera transitions: for each ground-truth identity seen in more than one camera, its
  cameras are ordered by the first frame it appears in (cameras are assumed roughly synchronised)
  and each consecutive pair A -> B is one transition. The predicted id of an identity in a camera is
  the majority over its matched frames there; a transition is correct when both cameras have one
  and they are equal (an unmatched camera makes it wrong);
* false merges: predicted ids whose per-camera majority ground-truth identity differs between two
  cameras (one predicted id glued onto different vehicles across cameras).

IoU distances are computed here (``motmetrics.distances.iou_matrix`` 1.4.0 uses ``np.asfarray``,
which numpy 2 removed); the accumulator and metrics are motmetrics' own.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reidd.formats.mtmc import MTMCFormatError, camera_key, read_mtmc

__all__ = ["MTMCFormatError", "camera_key", "evaluate_mtmc", "format_table", "read_mtmc", "register"]

if TYPE_CHECKING:
    import pandas as pd


_MM_METRICS = [
    "idf1", "idp", "idr", "idtp", "idfp", "idfn", "mota", "motp", "precision", "recall",
    "num_switches", "num_fragmentations", "num_false_positives", "num_misses", "num_objects",
    "num_predictions", "num_matches", "num_unique_objects", "mostly_tracked", "partially_tracked",
    "mostly_lost", "num_frames",
]
_RATES = {"idf1", "idp", "idr", "mota", "motp", "precision", "recall"}
_CAM_METRICS = ["idf1", "mota", "precision", "recall", "num_switches", "num_objects", "num_predictions"]


def iou_distance(gt: np.ndarray, pred: np.ndarray, min_iou: float) -> np.ndarray:
    """``1 - IoU`` between ``x y w h`` boxes, NaN where IoU < ``min_iou`` (no match allowed)."""
    if len(gt) == 0 or len(pred) == 0:
        return np.empty((len(gt), len(pred)))
    g = gt[:, None, :]
    q = pred[None, :, :]
    iw = np.clip(np.minimum(g[..., 0] + g[..., 2], q[..., 0] + q[..., 2]) - np.maximum(g[..., 0], q[..., 0]), 0, None)
    ih = np.clip(np.minimum(g[..., 1] + g[..., 3], q[..., 1] + q[..., 3]) - np.maximum(g[..., 1], q[..., 1]), 0, None)
    inter = iw * ih
    union = g[..., 2] * g[..., 3] + q[..., 2] * q[..., 3] - inter
    iou = inter / union
    dist = 1.0 - iou
    dist[iou < min_iou] = np.nan
    return dist


def _by_frame(df: pd.DataFrame) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    out: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
    for (cam, frame), grp in df.groupby(["camera", "frame"], sort=False):
        out[(str(cam), int(frame))] = (grp["obj_id"].to_numpy(), grp[["x", "y", "w", "h"]].to_numpy(np.float64))
    return out


def _majority(values: list[int]) -> int:
    """Most frequent value; ties go to the smallest (deterministic)."""
    counts = Counter(values)
    best = max(counts.values())
    return min(v for v, c in counts.items() if c == best)


def _plain(name: str, v: Any) -> Any:
    """JSON value of one motmetrics number: counts as int, rates as float, NaN as None."""
    f = float(v)
    if not math.isfinite(f):
        return None
    return f if name in _RATES else int(round(f))


def _cross_camera(gt: pd.DataFrame, matches: pd.DataFrame) -> dict[str, Any]:
    """Transition accuracy and false merges from the matched (gt id, predicted id, camera) triples."""
    pred_of: dict[tuple[int, str], int] = {}
    for (oid, cam), grp in matches.groupby(["oid", "camera"]):
        pred_of[(int(oid), str(cam))] = _majority(grp["hid"].tolist())
    total = correct = 0
    first = gt.groupby(["obj_id", "camera"])["frame"].min().reset_index()
    for oid, grp in first.groupby("obj_id"):
        cams = [str(c) for c in grp.sort_values(["frame", "camera"])["camera"]]
        for a, b in zip(cams, cams[1:]):
            total += 1
            pa, pb = pred_of.get((int(oid), a)), pred_of.get((int(oid), b))
            correct += int(pa is not None and pa == pb)
    gt_of: dict[int, set[int]] = defaultdict(set)
    for (hid, _cam), grp in matches.groupby(["hid", "camera"]):
        gt_of[int(hid)].add(_majority(grp["oid"].tolist()))
    merged = sorted(h for h, oids in gt_of.items() if len(oids) > 1)
    return {
        "transitions_total": total,
        "transitions_correct": correct,
        "transition_accuracy": correct / total if total else None,
        "false_merges": len(merged),
        "false_merge_ids": merged,
    }


def evaluate_mtmc(
    gt_path: str | Path, pred_path: str | Path, iou: float = 0.5, progress: bool = False
) -> dict[str, Any]:
    """Score predicted MTMC tracks against ground truth (see the module docstring).

    Returns a JSON-serialisable dict: motmetrics' ``idf1 idp idr idtp idfp idfn mota precision recall
    num_switches ...`` over all cameras, ``mean_match_iou``, ``transitions_total/correct``,
    ``transition_accuracy`` (None without transitions), ``false_merges`` (+ ``false_merge_ids``)
    and ``per_camera`` (each camera scored on its own).
    """
    import motmetrics as mm
    import pandas as pd
    from tqdm import tqdm

    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou: must be in (0, 1], got {iou}")
    gt, pred = read_mtmc(gt_path), read_mtmc(pred_path)
    if gt.empty:
        raise MTMCFormatError(f"{gt_path}: no ground-truth boxes")
    cams = sorted(set(gt["camera"]) | set(pred["camera"]))
    last_frame = pd.concat([gt[["camera", "frame"]], pred[["camera", "frame"]]]).groupby("camera")["frame"].max()
    offsets, start = {}, 0
    for cam in cams:
        offsets[cam] = start
        start += int(last_frame[cam]) + 1
    if start > 2**63 - 1:
        raise MTMCFormatError(f"{gt_path}, {pred_path}: frame_id values too large to put all {len(cams)} cameras "
                              "on one timeline (their last frames must add up to less than 2**63)")
    g_frames, p_frames = _by_frame(gt), _by_frame(pred)
    keys = sorted(set(g_frames) | set(p_frames), key=lambda k: (offsets[k[0]] + k[1]))
    empty = (np.zeros(0, np.int64), np.zeros((0, 4)))
    acc = mm.MOTAccumulator(auto_id=False)
    cam_acc = {cam: mm.MOTAccumulator(auto_id=False) for cam in cams}
    for cam, frame in tqdm(keys, desc="scoring frames", unit="frame", disable=not progress):
        g_ids, g_box = g_frames.get((cam, frame), empty)
        p_ids, p_box = p_frames.get((cam, frame), empty)
        dist = iou_distance(g_box, p_box, iou)
        acc.update(g_ids, p_ids, dist, frameid=offsets[cam] + frame)
        cam_acc[cam].update(g_ids, p_ids, dist, frameid=frame)
    mh = mm.metrics.create()
    summary = mh.compute(acc, metrics=_MM_METRICS, name="all").iloc[0]
    result: dict[str, Any] = {k: _plain(k, summary[k]) for k in _MM_METRICS if k != "motp"}
    motp = _plain("motp", summary["motp"])
    result["mean_match_iou"] = None if motp is None else 1.0 - motp
    result["num_cameras"] = len(cams)
    result["iou"] = iou

    ev = acc.mot_events
    hit = ev[ev["Type"].isin(["MATCH", "SWITCH"])]
    frame_ids = hit.index.get_level_values("FrameId").to_numpy(np.int64)
    starts = np.array([offsets[c] for c in cams], np.int64)
    matches = pd.DataFrame({
        "oid": hit["OId"].to_numpy().astype(np.int64),
        "hid": hit["HId"].to_numpy().astype(np.int64),
        "camera": np.asarray(cams, dtype=object)[np.searchsorted(starts, frame_ids, side="right") - 1],
    })
    result.update(_cross_camera(gt, matches))
    per_cam = mh.compute_many(list(cam_acc.values()), names=cams, metrics=_CAM_METRICS)
    result["per_camera"] = {cam: {k: _plain(k, per_cam.loc[cam, k]) for k in _CAM_METRICS} for cam in cams}
    return result


def format_table(res: dict[str, Any]) -> str:
    """A readable summary of :func:`evaluate_mtmc`'s result."""

    def f(v: Any, pct: bool = True) -> str:
        if v is None:
            return "n/a"
        return f"{100 * v:6.2f}%" if pct else f"{v}"

    ta = res["transition_accuracy"]
    rows = [
        ("IDF1", f(res["idf1"])), ("IDP", f(res["idp"])), ("IDR", f(res["idr"])),
        ("MOTA", f(res["mota"])), ("precision", f(res["precision"])), ("recall", f(res["recall"])),
        ("mean IoU of matches", f(res["mean_match_iou"])),
        ("id switches", f(res["num_switches"], False)), ("fragmentations", f(res["num_fragmentations"], False)),
        ("false positives", f(res["num_false_positives"], False)), ("misses", f(res["num_misses"], False)),
        ("GT boxes / predicted boxes", f"{res['num_objects']} / {res['num_predictions']}"),
        ("GT identities", f(res["num_unique_objects"], False)),
        ("cameras / frames", f"{res['num_cameras']} / {res['num_frames']}"),
        ("cross-camera transitions", f"{res['transitions_correct']} / {res['transitions_total']} correct ({f(ta)})"),
        ("false merges (pred ids)", f(res["false_merges"], False)),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"MTMC scores (IoU >= {res['iou']}, all cameras as one sequence)"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in rows]
    lines.append("")
    head = ("IDF1", "MOTA", "prec", "recall")
    lines.append(f"  {'camera':<10} " + " ".join(f"{h:>8}" for h in head) + f" {'IDsw':>6} {'GT':>7} {'pred':>7}")
    for cam, m in res["per_camera"].items():
        lines.append(
            f"  {cam:<10} {f(m['idf1']):>8} {f(m['mota']):>8} {f(m['precision']):>8} {f(m['recall']):>8} "
            f"{m['num_switches']:>6} {m['num_objects']:>7} {m['num_predictions']:>7}"
        )
    return "\n".join(lines)


def run_eval_mtmc(args: argparse.Namespace) -> int:
    """The ``eval-mtmc`` command."""
    from reidd.config import check_output_file, printable

    why = check_output_file(str(Path(args.json).absolute())) if args.json else None
    if why:
        print(f"error: --json: {printable(why)}", file=sys.stderr)
        return 2
    try:
        res = evaluate_mtmc(args.gt, args.pred, iou=args.iou, progress=True)
    except (FileNotFoundError, MTMCFormatError, ValueError) as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    print(format_table(res))
    if args.json:
        out = Path(args.json)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: --json: cannot write {printable(str(out))}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"wrote {out}")
    return 0


def register(subparsers: Any) -> None:
    """Add the ``eval-mtmc`` command."""
    p = subparsers.add_parser(
        "eval-mtmc",
        help="Score multi-camera tracks against ground truth (AI City MTMC format).",
        description=(
            "Score predicted multi-camera tracks against ground truth, both in AI City Challenge MTMC format "
            "('camera_id obj_id frame_id xmin ymin width height -1 -1' per line). All cameras are scored as one "
            "sequence with motmetrics (IDF1, MOTA, ...), plus cross-camera transition accuracy and false merges."
        ),
    )
    p.add_argument("--gt", required=True, help="Ground-truth MTMC file.")
    p.add_argument("--pred", required=True, help="Predicted MTMC file (e.g. what 'reidd replay' wrote).")
    p.add_argument(
        "--iou", type=float, default=0.5, help="Minimum IoU for a predicted box to match a GT box (default 0.5)."
    )
    p.add_argument("--json", help="Also write all scores to this JSON file.")
    p.set_defaults(func=run_eval_mtmc)
