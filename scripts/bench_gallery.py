#!/usr/bin/env python
"""Benchmark the gallery's FAISS index: build time, single-query latency, recall@k and memory.

For every size it builds the exact index and the kind that ``gallery.index: auto`` would use at that
size (IVF-Flat from ``--exact-max`` on), plus any kinds named with ``--kinds``, then times ``--queries``
single-query searches through :class:`reidd.gallery.index.VectorIndex` (what the matcher calls).
Recall@k is measured against the exact index (one batched search; its single-query latency is
timed on the first ``--exact-timed`` queries). Memory is the growth of this process's resident set
while the index is built.

Then, at the largest size (unless ``--no-swap``), the live case: an index built with
``background=True`` (what the daemon uses) holds a quarter of the vectors as IVF, the rest are added,
which makes it retrain beside the index in use; single queries are timed while it builds, to show
that matching is not stalled by the rebuild. Prints a table, then one JSON line.

Example: ``python scripts/bench_gallery.py --sizes 1e4,1e5,1e6 --dim 256 --queries 1000 --k 10``

``--nprobe 16,48,96`` times several nprobe values on one IVF index and ``--ef-search 64,256`` several
efSearch values on one HNSW graph (``--kinds hnsw``; its 1e6 build takes 5-10 minutes on 2 cores),
which is how to pick them for a gallery size.

``--data realistic --real RUN/embeddings.jsonl ...`` builds the vectors from real re-ID embeddings: the tracklet
embeddings a replay recorded (``reidd replay --save-embeddings``; ``scripts/bench_mtmc.py`` keeps them under
``.state/bench/runs/TAG/gt/default/SEED/out/``). Each identity's centre is a random mixture of a few real embeddings
(Dirichlet weights), and its three gallery entries and its query are views of that centre with noise. The mixture
size and the noise are chosen so that two views of one vehicle have the cosine ``--view-cos`` (0.78: two cameras'
tracklets of one vehicle, default embedder, benchmark seeds 11-13: 0.779 / 0.776 / 0.782) and two vehicles the
mean cosine the real embeddings have between different tracklets; the script prints both for the real and the
generated data. ``--dim`` is then the real embeddings' size. Example:
``python scripts/bench_gallery.py --data realistic --real .state/bench/runs/base/gt/default/1[123]/out/embeddings.jsonl --sizes 1e5,1e6``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reidd.config import GalleryConfig  # noqa: E402
from reidd.gallery.index import VectorIndex  # noqa: E402

_CHUNK = 50_000


def _sizes(text: str) -> list[int]:
    try:
        out = [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes: expected comma-separated numbers like 1e4,1e5, got {text!r}")
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--sizes: every size must be >= 1, got {text!r}")
    return out


def _ints(flag: str):  # noqa: ANN202 - returns an argparse type
    def parse(text: str) -> list[int]:
        try:
            out = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: expected comma-separated integers, got {text!r}")
        if not out or min(out) < 1:
            raise argparse.ArgumentTypeError(f"{flag}: every value must be >= 1, got {text!r}")
        return out

    return parse


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Runs offline; the data are synthetic.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--sizes", type=_sizes, default=_sizes("1e4,1e5,1e6"), help="Gallery sizes, comma-separated.")
    p.add_argument("--dim", type=int, default=256, help="Embedding dimension.")
    p.add_argument("--queries", type=int, default=1000, help="Single-query searches timed per index.")
    p.add_argument(
        "--exact-timed",
        type=int,
        default=200,
        help="Single queries timed on the exact index (its recall comes from one batched search of all queries).",
    )
    p.add_argument("--k", type=int, default=10, help="Neighbours per query (recall@k).")
    p.add_argument(
        "--data",
        choices=("clustered", "uniform", "realistic"),
        default="clustered",
        help="'clustered': views around n/10 identities around 64 appearance groups (like re-ID embeddings); "
        "'uniform': uniform on the sphere (the worst case for graph indexes); 'realistic': mixtures of the real "
        "embeddings in --real, spread as real views of one vehicle are (see above).",
    )
    p.add_argument("--real", nargs="+", type=Path, default=[], metavar="EMBEDDINGS_JSONL",
                   help="With --data realistic: embeddings.jsonl files recorded by replays (--save-embeddings).")
    p.add_argument("--view-cos", type=float, default=0.78,
                   help="With --data realistic: mean cosine of two views (cameras) of one vehicle.")
    p.add_argument("--noise", type=float, default=0.8, help="Spread around a centre for --data clustered.")
    p.add_argument("--exact-max", type=int, default=GalleryConfig().exact_max,
                   help="'auto' uses exact search below this size (default: the gallery config's).")
    p.add_argument("--kinds", default="", help="Extra kinds to build at every size, e.g. 'ivf' or 'hnsw,ivf'.")
    defaults = GalleryConfig()
    p.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m, help="HNSW graph degree M.")
    p.add_argument("--ef-construction", type=int, default=defaults.ef_construction, help="HNSW efConstruction.")
    p.add_argument(
        "--ef-search",
        type=_ints("--ef-search"),
        default=[64, defaults.ef_search],
        help="HNSW efSearch (raised to k when smaller); a list such as 64,256 times each on the same graph.",
    )
    p.add_argument(
        "--nprobe",
        type=_ints("--nprobe"),
        default=[defaults.nprobe],
        help="IVF cells scanned per query; a list such as 16,48,96 times each on the same index.",
    )
    p.add_argument("--train-per-list", type=int, default=24, help="IVF k-means training vectors per cell.")
    p.add_argument("--nlist", type=int, default=None,
                   help="IVF cells (gallery.nlist; default: unset, 2 x sqrt(entries)).")
    p.add_argument("--no-swap", action="store_true", help="Skip the build-beside (background retrain) check.")
    p.add_argument(
        "--build-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="OpenMP threads for bulk HNSW inserts (the library default is 1, which makes builds "
        "deterministic; more is faster).",
    )
    p.add_argument("--seed", type=int, default=0, help="Random seed of the synthetic data.")
    p.add_argument("--plot", type=Path, default=None, help="Also save a latency/recall plot (PNG) here.")
    return p


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _make_data(rng: np.random.Generator, n: int, nq: int, d: int, kind: str, noise: float) -> tuple[np.ndarray, ...]:
    """Gallery vectors (n, d) and held-out queries (nq, d), unit norm, float32, built in chunks.

    'clustered' is hierarchical like re-ID embeddings: 64 appearance groups (think type and colour),
    n/10 identities scattered around them, and views scattered around each identity. Independent
    random identity centres would be mutually orthogonal in high dimension, an island structure no
    trained embedding has, on which graph indexes cannot navigate.
    """
    centres = None
    if kind == "clustered":
        groups = _unit(rng.standard_normal((64, d)))
        n_ids = max(1, n // 10)
        centres = _unit(groups[rng.integers(0, 64, n_ids)] + rng.standard_normal((n_ids, d)) / np.sqrt(d))

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, d), dtype=np.float32)
        for s in range(0, m, _CHUNK):
            e = min(m, s + _CHUNK)
            x = rng.standard_normal((e - s, d)).astype(np.float32)
            if centres is not None:
                x = centres[rng.integers(0, len(centres), e - s)] + noise / np.sqrt(d) * x
            out[s:e] = _unit(x)
        return out

    return draw(n), draw(nq)


def _real_embeddings(paths: list[Path]) -> np.ndarray:
    """Every tracklet embedding recorded in these embeddings.jsonl files, unit norm (RecordingError on a bad file)."""
    from reidd.match.recording import read_embedding_log

    out = [item.embedding for path in paths for kind, item in read_embedding_log(path) if kind == "query"]
    if len(out) < 20:
        raise ValueError(f"--real: {len(out)} tracklet embeddings in {', '.join(map(str, paths))}; need at least 20")
    return _unit(np.stack(out).astype(np.float32))


def _stranger_cos(x: np.ndarray, rng: np.random.Generator, pairs: int = 20000) -> np.ndarray:
    i, j = rng.integers(0, len(x), pairs), rng.integers(0, len(x), pairs)
    keep = i != j
    return np.einsum("ij,ij->i", x[i[keep]], x[j[keep]])


class RealisticData:
    """Identity centres as Dirichlet mixtures of ``m`` real embeddings, views as centre + noise; ``m`` and the
    noise are calibrated on samples so that views of one identity meet ``view_cos`` and different identities the
    real embeddings' stranger cosines (their mean and spread)."""

    def __init__(self, real: np.ndarray, view_cos: float, rng: np.random.Generator):
        self.real, self.d = real, real.shape[1]
        real_s = _stranger_cos(real, rng)
        self.target, self.target_sd = float(real_s.mean()), float(real_s.std())
        best = None
        for m in range(1, 7):
            self.m = m
            for sigma in np.arange(0.1, 1.25, 0.05):
                self.sigma = float(sigma)
                c = self._centres(np.random.default_rng(1), 1000)
                a, b = self._views(np.random.default_rng(2), c), self._views(np.random.default_rng(3), c)
                same = float(np.einsum("ij,ij->i", a, b).mean())
                s = _stranger_cos(a, np.random.default_rng(4))
                strangers = float(s.mean())
                err = abs(same - view_cos) + abs(strangers - self.target) + abs(float(s.std()) - self.target_sd)
                if best is None or err < best[0]:
                    best = (err, m, self.sigma, same, strangers)
        _, self.m, self.sigma, self.same, self.strangers = best
        views = self._views(np.random.default_rng(6), self._centres(np.random.default_rng(5), 2000))
        s = _stranger_cos(views, np.random.default_rng(7))
        self.stranger_sd, self.stranger_p99 = float(s.std()), float(np.quantile(s, 0.99))

    def _centres(self, rng: np.random.Generator, n: int) -> np.ndarray:
        pick = rng.integers(0, len(self.real), (n, self.m))
        w = rng.dirichlet(np.ones(self.m), n).astype(np.float32)
        return _unit(np.einsum("nm,nmd->nd", w, self.real[pick]))

    def _views(self, rng: np.random.Generator, c: np.ndarray) -> np.ndarray:
        return _unit(c + self.sigma / np.sqrt(self.d) * rng.standard_normal(c.shape).astype(np.float32))

    def make(self, rng: np.random.Generator, n: int, nq: int) -> tuple[np.ndarray, np.ndarray]:
        """A gallery of ``n`` entries, three views per identity (a vehicle seen by three cameras), and ``nq``
        queries: a fourth view of random gallery identities (a vehicle seen again)."""
        n_ids = max(1, (n + 2) // 3)
        x = np.empty((n, self.d), dtype=np.float32)
        owner = np.arange(n) % n_ids
        centres_q = rng.integers(0, n_ids, nq)
        cq = np.empty((nq, self.d), dtype=np.float32)
        for s in range(0, n_ids, _CHUNK):
            e = min(n_ids, s + _CHUNK)
            c = self._centres(rng, e - s)
            rows = np.nonzero((owner >= s) & (owner < e))[0]
            x[rows] = self._views(rng, c[owner[rows] - s])
            qs = np.nonzero((centres_q >= s) & (centres_q < e))[0]
            cq[qs] = c[centres_q[qs] - s]
        return x, self._views(rng, cq)


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def _build(kind: str, x: np.ndarray, ids: list[str], args: argparse.Namespace) -> tuple[VectorIndex, float, float]:
    before = _rss()
    index = VectorIndex(
        x.shape[1],
        kind=kind,
        exact_max=args.exact_max,
        hnsw_m=args.hnsw_m,
        ef_search=args.ef_search[0],
        nprobe=args.nprobe[0],
        nlist=args.nlist,
        train_per_list=args.train_per_list,
        ef_construction=args.ef_construction,
        build_threads=args.build_threads,
    )
    t0 = time.perf_counter()
    if kind == "ivf":  # trained once on the whole set
        index.add(ids, x)
    else:
        chunks = tqdm(
            range(0, len(x), _CHUNK), desc=f"build {kind} n={len(x)}", unit="chunk", leave=False, disable=None
        )
        for s in chunks:
            index.add(ids[s : s + _CHUNK], x[s : s + _CHUNK])
    build_s = time.perf_counter() - t0
    return index, build_s, (_rss() - before) / 2**20


def _swap_check(x: np.ndarray, q: np.ndarray, ids: list[str], truth: list[list[str]],
                args: argparse.Namespace) -> dict:
    """Queries answered while a background retrain runs: the daemon's index grows 4x past its last
    training and rebuilds beside the one in use."""
    n = len(x)
    index = VectorIndex(x.shape[1], kind="auto", exact_max=args.exact_max, nprobe=args.nprobe[0],
                        train_per_list=args.train_per_list, background=True)
    index.add(ids[: n // 4], x[: n // 4])
    index.wait()
    from_nlist = index.nlist_in_use
    for s in range(n // 4, n, _CHUNK):  # the last chunk reaches 4x: the retrain starts beside
        index.add(ids[s : s + _CHUNK], x[s : s + _CHUNK])
    t0 = time.perf_counter()
    lat: list[float] = []
    i = 0
    with tqdm(desc="queries during the retrain", unit="q", leave=False, disable=None) as bar:
        while index.building is not None:
            t = time.perf_counter()
            index.search(q[i % len(q)], args.k)
            lat.append((time.perf_counter() - t) * 1000)
            i += 1
            bar.update()
    build_s = time.perf_counter() - t0
    got = [index.search(q[j], args.k)[1][0] for j in range(len(q))]
    recall = float(np.mean([len(set(g) & set(t)) / max(1, len(t)) for g, t in zip(got, truth)]))
    a = np.asarray(lat) if lat else np.zeros(1)
    out = {"size": n, "from_nlist": from_nlist, "to_nlist": index.nlist_in_use, "build_s": round(build_s, 2),
           "queries_during": len(lat), "p50_ms": round(float(np.percentile(a, 50)), 3),
           "p99_ms": round(float(np.percentile(a, 99)), 3), "max_ms": round(float(a.max()), 3),
           "recall_after": round(recall, 4)}
    index.close()
    return out


def _time_queries(index: VectorIndex, q: np.ndarray, k: int, label: str) -> tuple[list[list[str]], np.ndarray]:
    got: list[list[str]] = []
    lat = np.empty(len(q))
    for i in tqdm(range(len(q)), desc=f"query {label}", unit="q", leave=False, disable=None):
        t0 = time.perf_counter()
        _, ids = index.search(q[i], k)
        lat[i] = (time.perf_counter() - t0) * 1000
        got.append(ids[0])
    return got, lat


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    positive = ("dim", "queries", "exact_timed", "k", "exact_max", "hnsw_m", "ef_construction", "train_per_list")
    if args.nlist is not None and args.nlist < 1:
        print("bench_gallery: --nlist must be >= 1", file=sys.stderr)
        return 2
    for name in positive:
        if getattr(args, name) < 1:
            print(f"bench_gallery: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    extra = [s.strip() for s in args.kinds.split(",") if s.strip()]
    bad = [s for s in extra if s not in ("flat", "hnsw", "ivf")]
    if bad:
        print(f"bench_gallery: --kinds: unknown kind(s) {bad}; use flat, hnsw, ivf", file=sys.stderr)
        return 2
    realistic = None
    if args.data == "realistic":
        if not args.real:
            print("bench_gallery: --data realistic needs --real EMBEDDINGS_JSONL ...", file=sys.stderr)
            return 2
        if not 0 < args.view_cos < 1:
            print("bench_gallery: --view-cos must be between 0 and 1", file=sys.stderr)
            return 2
        try:
            real = _real_embeddings(args.real)
        except Exception as exc:  # RecordingError names the file and line; ValueError too few
            print(f"bench_gallery: {exc}", file=sys.stderr)
            return 2
        args.dim = real.shape[1]
        realistic = RealisticData(real, args.view_cos, np.random.default_rng(args.seed))
        real_s = _stranger_cos(real, np.random.default_rng(5))
        print(f"real: {len(real)} tracklet embeddings of {args.dim} dimensions; different tracklets: cosine mean "
              f"{real_s.mean():.3f} sd {real_s.std():.3f} p99 {np.quantile(real_s, 0.99):.3f}", file=sys.stderr)
        print(f"generated: mixtures of {realistic.m}, view noise {realistic.sigma:.3f}: two views of one vehicle "
              f"{realistic.same:.3f} (asked {args.view_cos}); different vehicles: mean {realistic.strangers:.3f} "
              f"sd {realistic.stranger_sd:.3f} p99 {realistic.stranger_p99:.3f}",
              file=sys.stderr)
    rows: list[dict] = []
    swap: dict | None = None
    for n in args.sizes:
        rng = np.random.default_rng(args.seed)
        if realistic is not None:
            x, q = realistic.make(rng, n, args.queries)
        else:
            x, q = _make_data(rng, n, args.queries, args.dim, args.data, args.noise)
        ids = [str(i) for i in range(n)]
        auto_kind = "ivf" if n >= args.exact_max else "flat"
        kinds = ["flat"] + [k for k in dict.fromkeys([auto_kind, *extra]) if k != "flat"]
        truth: list[list[str]] = []
        for kind in kinds:
            index, build_s, mem_mb = _build(kind, x, ids, args)
            settings: list[tuple[str, dict]] = [("", {})]
            if kind == "hnsw":
                settings = []
                for ef in args.ef_search:
                    p = {"M": args.hnsw_m, "efConstruction": args.ef_construction, "efSearch": max(ef, args.k),
                         "build_threads": args.build_threads}
                    settings.append((f"M{args.hnsw_m} ef{p['efSearch']}", p))
            elif index.kind_in_use == "ivf":
                settings = [(f"nl{index.nlist_in_use} np{npr}", {"nlist": index.nlist_in_use, "nprobe": npr,
                                                                "train_per_list": args.train_per_list})
                            for npr in args.nprobe]
            for j, (label, params) in enumerate(settings):
                if "efSearch" in params:
                    index.ef_search = params["efSearch"]
                if "nprobe" in params:
                    index.nprobe = params["nprobe"]
                if kind == "flat":  # ground truth in one batched (BLAS) search; latency on a sample
                    truth = index.search(q, args.k)[1]
                    got, lat = _time_queries(index, q[: args.exact_timed], args.k, f"{kind} n={n}")
                else:
                    got, lat = _time_queries(index, q, args.k, f"{kind} {label} n={n}")
                recall = float(np.mean([len(set(g) & set(t)) / max(1, len(t)) for g, t in zip(got, truth)]))
                rows.append(
                    {
                        "size": n,
                        "kind": kind,
                        "index": index.kind_in_use,
                        "setting": label,
                        "auto": kind == auto_kind and j == 0,
                        "build_s": round(build_s, 3),
                        "p50_ms": round(float(np.percentile(lat, 50)), 4),
                        "p99_ms": round(float(np.percentile(lat, 99)), 4),
                        "recall_at_k": round(recall, 4),
                        "mem_mb": round(mem_mb, 1),
                        "params": params,
                    }
                )
            del index
        if n == max(args.sizes) and not args.no_swap and n // 4 >= args.exact_max:
            swap = _swap_check(x, q, ids, truth, args)
        del x, q
    _print_table(rows, args.k)
    if swap:
        print(f"\nbuild beside, n={swap['size']}: the IVF retrain ({swap['from_nlist']} -> {swap['to_nlist']} cells) "
              f"took {swap['build_s']:.1f} s; {swap['queries_during']} single queries answered meanwhile, "
              f"p50 {swap['p50_ms']:.2f} ms, p99 {swap['p99_ms']:.2f} ms, max {swap['max_ms']:.2f} ms; "
              f"after the swap recall@{args.k} {swap['recall_after']:.4f}")
    if args.plot:
        _plot(rows, args.plot, args.k)
    summary = {
        "bench": "gallery",
        "dim": args.dim,
        "queries": args.queries,
        "k": args.k,
        "data": args.data,
        **({} if realistic is None else {"realistic": {"mixture": realistic.m, "view_noise": round(realistic.sigma, 4),
                                                        "view_cos": round(realistic.same, 4),
                                                        "stranger_cos": round(realistic.strangers, 4),
                                                        "stranger_sd": round(realistic.stranger_sd, 4),
                                                        "real_stranger_cos": round(realistic.target, 4)}}),
        "exact_max": args.exact_max,
        "cpu_count": os.cpu_count(),
        "results": rows,
        "swap": swap,
    }
    print(json.dumps(summary))
    return 0


def _print_table(rows: list[dict], k: int) -> None:
    cols = ("size", "kind", "in use", "setting", "auto", "build s", "p50 ms", "p99 ms", f"recall@{k}", "mem MiB")
    widths = (9, 5, 6, 14, 4, 9, 8, 8, 9, 8)
    head = " ".join(f"{c:>{w}}" for c, w in zip(cols, widths))
    print(head)
    print("-" * len(head))
    for r in rows:
        cells = (
            str(r["size"]),
            r["kind"],
            r["index"],
            r["setting"],
            "*" if r["auto"] else "",
            f"{r['build_s']:.2f}",
            f"{r['p50_ms']:.3f}",
            f"{r['p99_ms']:.3f}",
            f"{r['recall_at_k']:.4f}",
            f"{r['mem_mb']:.1f}",
        )
        print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths)))


def _plot(rows: list[dict], path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in dict.fromkeys((r["kind"], r["setting"]) for r in rows):
        sel = [r for r in rows if (r["kind"], r["setting"]) == kind]
        kind = " ".join(kind).strip()
        sizes = [r["size"] for r in sel]
        ax1.plot(sizes, [r["p50_ms"] for r in sel], "o-", label=f"{kind} p50")
        ax1.plot(sizes, [r["p99_ms"] for r in sel], "x--", label=f"{kind} p99")
        ax2.plot(sizes, [r["recall_at_k"] for r in sel], "o-", label=kind)
    ax1.set(xscale="log", yscale="log", xlabel="gallery size", ylabel="ms per single query", title="Search latency")
    ax2.set(xscale="log", xlabel="gallery size", ylabel=f"recall@{k} vs exact", title="Recall", ylim=(0, 1.02))
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
