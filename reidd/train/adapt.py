"""``reidd adapt``: fine-tune the re-ID model on a site's own recordings, with no identity labels.

1. **Collect.** The config's file cameras are replayed once (decode, detect, track: the daemon's own
   pipeline, no re-ID); every tracklet with at least ``min_crops`` crops keeps up to ``max_crops`` of its best
   crops on disk (``OUT/crops``). Tracking does not depend on the re-ID model, so this happens once.
2. **Match.** Each round embeds the tracklets with the current model and scores every pair of tracklets the
   topology allows on the daemon's calibrated scale (:func:`reidd.match.topology.score_pairs`). A pair that
   is each other's best in its camera pair, scores at least ``confident`` and leads both runner-ups by
   ``margin`` is a cross-view positive.
3. **Pseudo-identities.** A tracklet is one identity (its crops are positives of each other); positives
   join identities, strongest first, unless the join would put two tracklets of one camera into one
   identity (tracklets of one camera that overlap in time are certainly two vehicles, and a vehicle's track
   broken in two is the fragment logic's job, not a training label's).
4. **Train.** The P x K trainer of ``reidd train`` (same losses, schedule and progress reporting),
   fine-tuning from the current model, for ``epochs`` epochs, on the identities seen by two or more
   cameras; the other identities of the batch are the negatives. Tracklets no one matched are left out:
   their vehicle may be in another camera, and training them apart would be training a mistake.

Rounds repeat 2-4 with the new model. Safeguards against confirming its own mistakes: the labels are rebuilt
from scratch every round (a wrong join of round 1 is not carried into round 2 unless the new model makes
it again); only confident, mutual, one-per-camera joins count; and a round whose model finds fewer confident
cross-view pairs than the model before it is not kept (the previous model stays the result).

Writes ``OUT/adapted.pt`` (a normal reidd checkpoint for ``reid.weights``), ``OUT/adapt.json`` (what it learned
from, per round) and ``OUT/adapt.png``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2

from reidd.config import Config
from reidd.types import Crop, Tracklet, TrackletEmbedding


class AdaptError(ValueError):
    """Adaptation cannot start or cannot go on (the message says why and names the field or file)."""


@dataclass
class SiteTracklet:
    """A collected tracklet: its boxes (no pixels) and its crops on disk."""

    tracklet: Tracklet
    crops: list[tuple[str, float]]  # (path, quality)


class _Collector:
    """Pipeline sink: writes each usable tracklet's crops under ``root`` and keeps the rest in memory."""

    def __init__(self, root: Path, min_crops: int, max_tracklets: int):
        self.root = root
        self.min_crops = min_crops
        self.max_tracklets = max_tracklets
        self.items: list[SiteTracklet] = []
        self.skipped = 0

    def __call__(self, tracklets: list[Tracklet]) -> None:
        for t in tracklets:
            if len(t.crops) < self.min_crops or len(self.items) >= self.max_tracklets:
                self.skipped += 1
                continue
            folder = self.root / t.camera_id
            folder.mkdir(parents=True, exist_ok=True)
            crops = []
            for i, c in enumerate(t.crops):
                path = folder / f"{t.local_id}_{t.segment}_{i}.png"
                if not cv2.imwrite(str(path), c.image):
                    raise AdaptError(f"cannot write {path}")
                crops.append((str(path), float(c.quality)))
            self.items.append(SiteTracklet(Tracklet(t.camera_id, t.local_id, t.segment, t.boxes, [], t.reason, t.cls,
                                                    t.session), crops))


def collect(cfg: Config, crops_dir: Path, *, min_crops: int = 3, max_crops: int = 16,
            max_tracklets: int = 20_000) -> tuple[list[SiteTracklet], dict[str, Any]]:
    """Replay the config's cameras through detection and tracking; keep tracklets with their crops."""
    from reidd.context import RunContext
    from reidd.pipeline import Pipeline

    cams = [c for c in cfg.enabled_cameras if c.is_live]
    if cams:
        raise AdaptError(f"cameras: adapt learns from recorded files; these are live streams: "
                         f"{', '.join(c.id for c in cams)}")
    run_cfg = cfg.model_copy(update={
        "reid": cfg.reid.model_copy(update={"enabled": False}),
        "tracklets": cfg.tracklets.model_copy(update={"max_crops": max(cfg.tracklets.max_crops, max_crops)}),
        "metrics": cfg.metrics.model_copy(update={"enabled": False}),
    })
    sink = _Collector(crops_dir, min_crops, max_tracklets)
    result = Pipeline(run_cfg, RunContext.for_replay(), sinks=[sink]).run()
    failed = {k: v.error for k, v in result.cameras.items() if v.error}
    if failed:
        raise AdaptError("cameras: the replay failed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    return sink.items, {"frames": result.frames, "tracklets_kept": len(sink.items),
                        "tracklets_skipped": sink.skipped, "crops": sum(len(s.crops) for s in sink.items)}


def embed(items: list[SiteTracklet], embedder, chunk: int = 64) -> list[TrackletEmbedding]:
    """Pooled embeddings of the collected tracklets with ``embedder`` (crops read back from disk)."""
    out: list[TrackletEmbedding] = []
    for i in range(0, len(items), chunk):
        batch = []
        for s in items[i:i + chunk]:
            crops = [Crop(0, 0.0, (0, 0, 0, 0), cv2.imread(p, cv2.IMREAD_COLOR), q) for p, q in s.crops]
            t = s.tracklet
            batch.append(Tracklet(t.camera_id, t.local_id, t.segment, t.boxes, crops, t.reason, t.cls, t.session))
        for e, t in zip(embedder.embed_tracklets(batch), batch):
            if e is not None:
                e.tracklet = Tracklet(t.camera_id, t.local_id, t.segment, t.boxes, [], t.reason, t.cls, t.session)
                out.append(e)
    return out


def pseudo_identities(embs: list[TrackletEmbedding], cfg: Config, *, confident: float, margin: float
                      ) -> tuple[dict[str, int], dict[str, Any]]:
    """Tracklet id -> pseudo-identity (0..N-1) from confident mutual cross-camera matches (module docstring)."""
    from reidd.match.topology import mutual_matches, score_pairs

    ps = score_pairs(embs, cfg.matching, use_class=cfg.detector.type != "motion")
    matches = mutual_matches(ps, confident, margin)
    parent = {e.tracklet.tracklet_id: e.tracklet.tracklet_id for e in embs}
    cams: dict[str, set[str]] = {tid: {ps.camera_of[tid]} for tid in parent}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    ordered = sorted((m for v in matches.values() for m in v), key=lambda m: (-m[3], m[0], m[1]))
    joined, refused = [], 0
    per_pair: dict[str, int] = defaultdict(int)
    for eid, qid, transit, score in ordered:
        a, b = find(eid), find(qid)
        if a == b:
            continue
        if cams[a] & cams[b]:  # two tracklets of one camera in one identity: refuse
            refused += 1
            continue
        parent[b] = a
        cams[a] |= cams.pop(b)
        joined.append({"entry": eid, "query": qid, "transit_s": round(transit, 2), "score": round(score, 3)})
        per_pair[f"{ps.camera_of[eid]}->{ps.camera_of[qid]}"] += 1
    roots = sorted({find(t) for t in parent})
    index = {r: i for i, r in enumerate(roots)}
    labels = {t: index[find(t)] for t in parent}
    sizes = defaultdict(int)
    for v in labels.values():
        sizes[v] += 1
    stats = {"identities": len(roots), "cross_view_pairs": len(joined), "refused_same_camera": refused,
             "pairs_per_camera_pair": dict(sorted(per_pair.items())),
             "multi_camera_identities": sum(1 for n in sizes.values() if n > 1), "joins": joined}
    return labels, stats


def build_dataset(items: list[SiteTracklet], labels: dict[str, int], name: str):
    """Train on the crops of the multi-camera pseudo-identities only. A tracklet left alone is not used as a
    training identity: its vehicle may well be in another camera, unmatched so far, and training it apart
    from that sighting would teach the model the opposite of what it needs (measured: with every tracklet
    as an identity, a round made the model worse on one benchmark scene although all its joins were right).
    Identities are renumbered 0..N-1.

    The evaluation set (a proxy: it measures agreement with the pseudo-labels, not accuracy) is, per
    multi-camera identity, one crop of its earliest tracklet as the query and one crop of each of its other
    tracklets in the gallery, with one crop of every single-camera tracklet as distractors."""
    from .datasets import ReidDataset, Sample

    cam_index = {c: i for i, c in enumerate(sorted({s.tracklet.camera_id for s in items}))}
    by_label: dict[int, list[SiteTracklet]] = defaultdict(list)
    for s in items:
        by_label[labels[s.tracklet.tracklet_id]].append(s)
    multi = {lab: i for i, lab in enumerate(sorted(lab for lab, m in by_label.items() if len(m) > 1))}
    train = [Sample(p, multi[lab], cam_index[s.tracklet.camera_id], s.tracklet.tracklet_id)
             for lab, members in sorted(by_label.items()) if lab in multi for s in members for p, _ in s.crops]
    query, gallery = [], []
    for pid, members in sorted(by_label.items()):
        members = sorted(members, key=lambda s: s.tracklet.first_ts)
        best = [max(s.crops, key=lambda c: c[1])[0] for s in members]
        cams = [cam_index[s.tracklet.camera_id] for s in members]
        code = multi.get(pid, len(multi) + pid)  # single-camera distractors: labels no query has
        if len(members) > 1:
            query.append(Sample(best[0], code, cams[0]))
        gallery += [Sample(p, code, c) for p, c in zip(best[1:] if len(members) > 1 else best,
                                                        cams[1:] if len(members) > 1 else cams)]
    return ReidDataset(train, query, gallery, name)


def _start_checkpoint(cfg: Config, start: str | None, out: Path) -> Path:
    from reidd.reid.checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint

    src = start or cfg.reid.weights
    field = "--from" if start else "reid.weights"
    if src:
        if str(src).endswith(".onnx"):
            raise AdaptError(f"{field}: {src} is an ONNX export; adapt fine-tunes a PyTorch checkpoint (.pt)")
        try:
            load_checkpoint(src)
        except (CheckpointMismatch, FileNotFoundError) as exc:
            raise AdaptError(f"{field}: {exc}") from None
        return Path(src)
    from reidd.reid.backbones import PretrainedUnavailable
    from reidd.reid.embedder import expected_spec
    from reidd.reid.model import build_model

    try:
        model = build_model(expected_spec(cfg.reid), pretrained=True)
    except PretrainedUnavailable as exc:
        raise AdaptError(f"reid.backbone: no ImageNet weights here ({exc}); pass --from a checkpoint") from None
    return save_checkpoint(out / "start.pt", model, extra={"note": "the config's ImageNet-initialised model"},
                           rng_state=False)


def _embedder(cfg: Config, ckpt: Path):
    from reidd.reid.embedder import Embedder

    unset = {k: None for k in ("backbone", "embedding_dim", "attention", "multi_level", "input_size")}
    return Embedder(cfg.reid.model_copy(update={**unset, "weights": str(ckpt), "enabled": True}))


def adapt(cfg: Config, out: str | Path, *, start: str | None = None, rounds: int = 2, epochs: int = 6,
          confident: float = 3.0, margin: float | None = None, freeze_stages: int = 2, lr: float = 3.5e-4,
          batch_p: int = 16, batch_k: int = 4, seed: int = 0, progress: bool = True,
          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the whole adaptation (module docstring); returns what ``adapt.json`` holds."""
    from reidd.reid.checkpoint import load_checkpoint, save_checkpoint

    from .config import TrainConfig
    from .trainer import train

    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if rounds < 1 or epochs < 1:
        raise AdaptError("--rounds and --epochs must be at least 1")
    if len(cfg.enabled_cameras) < 2:
        raise AdaptError("cameras: adapt needs at least two enabled cameras (cross-view pairs)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    margin = cfg.matching.margin if margin is None else margin
    t0 = time.perf_counter()
    current = _start_checkpoint(cfg, start, out)
    log(f"adapt: starting from {current}; replaying {len(cfg.enabled_cameras)} camera(s) to collect tracklets")
    crops_dir = out / "crops"
    if crops_dir.exists():  # an earlier adapt run's crops are replaced; anything else there is not ours to delete
        if not (crops_dir / ".reidd-adapt").is_file():
            raise AdaptError(f"--out: {crops_dir} exists and was not written by reidd adapt; choose another --out")
        shutil.rmtree(crops_dir)
    crops_dir.mkdir(parents=True)
    (crops_dir / ".reidd-adapt").write_text("crops collected by reidd adapt; replaced at every run\n")
    items, collected = collect(cfg, crops_dir)
    log(f"adapt: {collected['tracklets_kept']} tracklets with {collected['crops']} crops "
        f"({collected['tracklets_skipped']} too short), {collected['frames']} frames")
    if len(items) < batch_p:
        raise AdaptError(f"cameras: only {len(items)} usable tracklets in the recordings; adapt needs at least "
                         f"{batch_p} (longer recordings, or a smaller --batch-p)")
    report: dict[str, Any] = {"start": str(current), "collected": collected, "confident": confident,
                              "margin": margin, "rounds": []}
    best_pairs = -1
    kept = current
    for r in range(1, rounds + 2):  # the last pass only measures the final model
        embs = embed(items, _embedder(cfg, current))
        labels, stats = pseudo_identities(embs, cfg, confident=confident, margin=margin)
        entry = {"round": r, "model": str(current), **{k: v for k, v in stats.items() if k != "joins"}}
        log(f"adapt: round {r} model {current.name}: {stats['cross_view_pairs']} confident cross-view pairs "
            f"{stats['pairs_per_camera_pair']}, {stats['identities']} pseudo-identities "
            f"({stats['refused_same_camera']} joins refused)")
        if stats["cross_view_pairs"] < best_pairs:
            entry["kept"] = False
            entry["note"] = "fewer confident cross-view pairs than the model before it: not kept"
            report["rounds"].append(entry)
            log(f"adapt: {entry['note']}; keeping {kept.name}")
            break
        best_pairs, kept = stats["cross_view_pairs"], current
        entry["kept"] = True
        if r > rounds:
            report["rounds"].append(entry)
            break
        if stats["cross_view_pairs"] == 0:
            raise AdaptError("no confident cross-view pair in the recordings: check matching.topology (the windows "
                             "must allow the real transits) or lower --confident")
        (out / f"round{r}").mkdir(exist_ok=True)
        (out / f"round{r}" / "joins.json").write_text(json.dumps(stats["joins"], indent=1))
        ds = build_dataset(items, labels, f"site:round{r}")
        if ds.num_train_pids < 4:
            raise AdaptError(f"only {ds.num_train_pids} multi-camera pseudo-identities; adapt needs at least 4 "
                             "(longer recordings, the right matching.topology, or a lower --confident)")
        tc = TrainConfig(data=str(crops_dir), finetune=str(current), epochs=epochs,
                         batch_p=min(batch_p, ds.num_train_pids),
                         min_iters=max(1, -(-len(ds.train) // (min(batch_p, ds.num_train_pids) * batch_k))),
                         batch_k=batch_k, lr=lr, warmup_epochs=1 if epochs > 2 else 0, freeze_stages=freeze_stages,
                         eval_every=epochs, seed=seed + r, out=str(out / f"round{r}"))
        res = train(tc, dataset=ds, progress=progress, log=log)
        entry["train"] = [{k: round(v, 4) for k, v in h.items()} for h in res.history]
        entry["proxy_mAP"] = round(res.history[-1].get("mAP", float("nan")), 4)
        report["rounds"].append(entry)
        current = res.last_checkpoint
    model, meta = load_checkpoint(kept)
    final = save_checkpoint(out / "adapted.pt", model, extra={
        "adapted_from": str(report["start"]), "rounds": len(report["rounds"]),
        "cross_view_pairs": best_pairs, **({"val": meta["metrics"].get("val")} if meta["metrics"].get("val") else {})},
        rng_state=False)
    report["adapted"] = str(final)
    report["kept_model"] = str(kept)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "adapt.json").write_text(json.dumps(report, indent=1))
    plot_adapt(report, out / "adapt.png")
    log(f"adapt: wrote {final} ({report['seconds']:.0f} s), {out / 'adapt.json'}, {out / 'adapt.png'}")
    return report


def plot_adapt(report: dict[str, Any], path: Path) -> None:
    """Cross-view pairs and pseudo-identities per round, and the training loss of each round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = report["rounds"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    xs = [r["round"] for r in rounds]
    a.bar([x - 0.2 for x in xs], [r["cross_view_pairs"] for r in rounds], width=0.4, label="confident cross-view pairs")
    a.bar([x + 0.2 for x in xs], [r["multi_camera_identities"] for r in rounds], width=0.4,
          label="multi-camera identities")
    a.set_xlabel("round (model before its training)")
    a.set_xticks(xs)
    a.legend(fontsize=8)
    a.set_title("what each model finds", fontsize=10)
    step = 0
    for r in rounds:
        losses = [h["loss"] for h in r.get("train", [])]
        if losses:
            b.plot(range(step + 1, step + len(losses) + 1), losses, marker="o", label=f"round {r['round']}")
            step += len(losses)
    b.set_xlabel("epoch")
    b.set_ylabel("training loss")
    b.set_title("training", fontsize=10)
    if step:
        b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
