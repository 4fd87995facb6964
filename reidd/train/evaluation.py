"""Evaluation of one or more re-ID models on a dataset's query/gallery, with optional re-ranking,
track-level modes and a multi-model ensemble; what ``reidd eval`` runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from reidd.reid.model import ReidModel

from .datasets import ReidDataset, Sample

MODES = ("image", "image-track", "track")
RERANKS = ("none", "kreciprocal", "qe", "aqe", "dba", "track-avg", "diffusion", "attributes", "kreciprocal+attributes",
           "diffusion+attributes")


@dataclass
class EvalRow:
    """One line of the results table."""

    model: str
    metric: str
    rerank: str
    result: dict[str, Any]
    cmc: np.ndarray


def _tracks(samples: list[Sample]) -> list[str]:
    """Track id per sample; a sample without a track is a track of its own."""
    return [s.track if s.track is not None else f"img:{s.path}" for s in samples]


def ensemble(features: list[np.ndarray]) -> np.ndarray:
    """Equal-weight ensemble of several models' L2-normalised embeddings: their concatenation scaled by
    1/sqrt(M), so the cosine similarity is the mean of the models' cosine similarities (models' embedding
    spaces are not aligned, so their vectors are not averaged; dims may differ)."""
    parts = [f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12) for f in features]
    return (np.concatenate(parts, axis=1) / np.sqrt(len(parts))).astype(np.float32)


def embed_dataset(model: ReidModel, ds: ReidDataset, *, scales: tuple[float, ...] = (1.0,), flip: bool = False,
                  batch_size: int = 64, device: str = "auto", precision: str = "auto", num_workers: int = 0,
                  progress: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Query and gallery features of one model, and the images per second it took."""
    from reidd.reid.features import extract_features

    t0 = time.perf_counter()
    kw = dict(batch_size=batch_size, device=device, scales=scales, flip=flip, precision=precision,
              num_workers=num_workers, progress=progress)
    qf = extract_features(model, ds.query, **kw)
    gf = extract_features(model, ds.gallery, **kw)
    dt = time.perf_counter() - t0
    return qf, gf, (len(ds.query) + len(ds.gallery)) / max(dt, 1e-9)


def evaluate_features(
    name: str, qf: np.ndarray, gf: np.ndarray, ds: ReidDataset, *, metrics: tuple[str, ...] = ("cosine",),
    mode: str = "image", reranks: tuple[str, ...] = ("none",), k1: int = 20, k2: int = 6,
    lambda_value: float = 0.3, qe_k: int = 5, max_rank: int = 50, progress: bool = False,
    diffusion: Any = None, attributes: Any = None, attribute_params: Any = None,
) -> list[EvalRow]:
    """Score features under every metric x rerank; see ``reidd eval --help`` for the modes.

    ``diffusion``: :class:`~reidd.evaluate.diffusion.DiffusionParams` of ``diffusion`` (default ones);
    ``attributes``: (query, gallery) :class:`~reidd.evaluate.attributes.Attributes` of the dataset's images, which
    the ``*attributes`` re-rankings need, weighed by ``attribute_params`` (``AttributeParams``).
    """
    from reidd.evaluate.attributes import attribute_rerank
    from reidd.evaluate.diffusion import diffusion_rerank
    from reidd.evaluate.metrics import average_by_track, evaluate_distmat, pairwise_distance
    from reidd.evaluate.rerank import (
        database_augmentation,
        k_reciprocal_rerank,
        query_expansion,
        track_distance_average,
    )

    if mode not in MODES:
        raise ValueError(f"mode: unknown '{mode}' (choose from {', '.join(MODES)})")
    q_pid = np.array([s.pid for s in ds.query])
    g_pid = np.array([s.pid for s in ds.gallery])
    q_cam = np.array([s.camid for s in ds.query])
    g_cam = np.array([s.camid for s in ds.gallery])
    g_tracks = np.array(_tracks(ds.gallery))
    if mode in ("image-track", "track"):
        gf, _, g_pid, g_cam = average_by_track(gf, g_tracks, g_pid, g_cam)
        g_tracks = np.arange(len(gf)).astype(str)
    if mode == "track":
        qf, _, q_pid, q_cam = average_by_track(qf, np.array(_tracks(ds.query)), q_pid, q_cam)
    if attributes is not None:  # pooled per track like the features
        qa, ga = attributes
        ga = ga.pooled(_tracks(ds.gallery)) if mode != "image" else ga
        qa = qa.pooled(_tracks(ds.query)) if mode == "track" else qa
    rows: list[EvalRow] = []
    max_rank = min(max_rank, len(gf))
    for metric in metrics:
        for rr in reranks:
            if rr not in RERANKS:
                raise ValueError(f"rerank: unknown '{rr}' (choose from {', '.join(RERANKS)})")
            base = {"attributes": "none"}.get(rr, rr.removesuffix("+attributes"))
            if base == "diffusion":
                dist = diffusion_rerank(qf, gf, diffusion)
            elif base == "kreciprocal":
                dist = k_reciprocal_rerank(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value, metric=metric,
                                           progress=progress)
            elif base in ("qe", "aqe"):
                dist = pairwise_distance(query_expansion(qf, gf, k=qe_k, alpha=3.0 if rr == "aqe" else 0.0), gf,
                                         metric)
            elif base == "dba":
                dist = pairwise_distance(qf, database_augmentation(gf, k=qe_k), metric)
            elif base == "track-avg":
                dist = track_distance_average(pairwise_distance(qf, gf, metric), g_tracks)
            else:
                dist = pairwise_distance(qf, gf, metric)
            if rr.endswith("attributes"):
                if attributes is None:
                    raise ValueError(f"rerank '{rr}': needs the images' attributes (reidd eval --attribute-model)")
                dist = attribute_rerank(dist, qa, ga, attribute_params)
            res = evaluate_distmat(dist, q_pid, g_pid, q_cam, g_cam, max_rank=max_rank, progress=progress)
            rows.append(EvalRow(name, metric, rr, res.as_dict(), np.asarray(res.cmc)))
    return rows


def format_table(rows: list[EvalRow]) -> str:
    """Plain-text table: model, metric, rerank, mAP, mINP, R1, R5, R10 (percent)."""
    width = max([len("model")] + [len(r.model) for r in rows])
    rw = max([11] + [len(r.rerank) for r in rows])
    head = f"{'model':<{width}}  {'metric':<9} {'rerank':<{rw}} {'mAP':>6} {'mINP':>6} {'R1':>6} {'R5':>6} {'R10':>6}"
    lines = [head, "-" * len(head)]
    for r in rows:
        v = r.result

        def pct(key: str) -> str:
            return f"{100 * v[key]:6.2f}" if key in v else f"{'-':>6}"

        lines.append(f"{r.model:<{width}}  {r.metric:<9} {r.rerank:<{rw}} {pct('mAP')} {pct('mINP')} "
                     f"{pct('rank1')} {pct('rank5')} {pct('rank10')}")
    return "\n".join(lines)
