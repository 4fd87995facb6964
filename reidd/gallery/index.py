"""In-memory FAISS inner-product index over L2-normalised vectors, keyed by string ids.

Kinds (``kind_in_use``):

* ``flat`` — exact search: ``IndexIDMap2(IndexFlatIP)``; removal is native.
* ``ivf`` — ``IndexIVFFlat`` with a hash-table direct map (native removal): the vectors are split into
  ``nlist`` k-means cells and a query scans the ``nprobe`` nearest cells with exact distances. ``nlist``
  defaults to ``2 * sqrt(n)`` at training time (k-means on a strided sample of ``train_per_list``
  vectors per cell) and the index is retrained when it has grown 4x since. It needs training, so with
  ``kind="ivf"`` it stays ``flat`` until there are 39 vectors per cell.
* ``hnsw`` — ``IndexHNSWFlat`` (approximate). FAISS cannot remove vectors from an HNSW graph, so
  removal marks the slot as a *tombstone*: the node stays in the graph (it keeps the graph
  connected) but searches pass an ``IDSelectorBitmap`` of live slots, so tombstones are never
  returned. When tombstones exceed ``compact_fraction`` of the stored vectors the graph is rebuilt
  from the live vectors only. Re-adding an id tombstones the old slot and appends a new one.

``kind="auto"`` is exact below ``exact_max`` entries and IVF from there on; it goes back to exact when
the count falls below ``exact_max // 2`` (hysteresis, so a gallery hovering at the threshold does not
rebuild on every add). Why IVF and not HNSW (``scripts/bench_gallery.py``, 1e6 x 256 clustered, 2
cores): IVF-Flat reaches recall@10 >= 0.99 against exact with a build of about a minute and removes
natively; HNSW at M=32 needed 324 s to build and stayed at recall 0.91.

Rebuilds (a kind switch, an IVF retrain, an HNSW compaction) read the live vectors from the index's
own storage, so no second copy of the gallery is kept. With ``background=False`` (the default) they
happen inside the call that triggers them. With ``background=True`` the new index is built beside the
old one on a worker thread while the old one keeps answering every call; the changes made meanwhile
are logged and applied to the new index when it is swapped in (at the first call after the build
ends, or in :meth:`wait`). A build that fails leaves the old index in use and is logged; it is
retried once the index has grown or shrunk by a quarter.

Vectors are L2-normalised on the way in (add and search), so similarities are cosines in [-1, 1].
Searches of fewer than 16 queries run on one OpenMP thread (starting a thread team costs more than
a single-query search); larger batches use FAISS's default.

Determinism (``background=False``): labels are assigned in insertion order and rebuilds re-insert live
vectors in that order. Flat and IVF (fixed k-means seed, strided training sample) are deterministic.
FAISS inserts a batch into an HNSW graph in parallel and the resulting graph can depend on thread
scheduling, so bulk HNSW inserts run with ``build_threads`` OpenMP threads, 1 by default: then every
result is a pure function of the sequence of calls. A background build is not deterministic (when it
is swapped in depends on timing), which is why replay does not use it.

Thread safety: every public method takes the index's lock; the background builder takes it only
while it copies a chunk of vectors out of the old index.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

# faiss' loader tries its AVX512 build first and logs the ModuleNotFoundError of the fallback at INFO, which
# reads like a failure at every start: its steps only from WARNING up (a real load failure is an ERROR). This
# is reidd's only import of faiss, so it runs before faiss is first imported.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

import faiss  # noqa: E402
import numpy as np

log = logging.getLogger(__name__)

_KINDS = ("auto", "flat", "hnsw", "ivf")
_MIN_PER_LIST = 39  # FAISS warns below 39 training points per centroid; the least vectors per IVF cell
_PARALLEL_QUERIES = 16  # fewer queries than this are searched on one thread
_CHUNK = 16384  # vectors copied (under the lock) and inserted per step of a rebuild


class _Core:
    """One FAISS index of one kind and its id maps; no rebuild policy."""

    def __init__(self, kind: str, index: faiss.Index, build_threads: int) -> None:
        self.kind = kind
        self.index = index
        self.build_threads = build_threads
        self.label_of: dict[str, int] = {}
        self.id_of: dict[int, str] = {}
        self.next_label = 0
        self.tombstones = 0  # hnsw only: dead slots still in the graph
        self.live = np.zeros(0, dtype=bool)  # hnsw only: slot -> alive
        self.selector: tuple[np.ndarray, faiss.IDSelectorBitmap] | None = None
        self.trained_n = 0  # ivf only: how many vectors there were when it was trained

    def __len__(self) -> int:
        return len(self.label_of)

    def ordered(self) -> list[tuple[str, int]]:
        """(id, label) of the live entries in insertion order."""
        return sorted(self.label_of.items(), key=lambda kv: kv[1])

    def insert(self, ids: list[str], x: np.ndarray) -> None:
        if not ids:
            return
        if self.kind == "hnsw":
            start = self.index.ntotal
            labels = np.arange(start, start + len(ids), dtype=np.int64)
            _with_threads(self.build_threads, self.index.add, x)
            self.live = np.concatenate([self.live, np.ones(len(ids), dtype=bool)])
            self.selector = None
        else:
            labels = np.arange(self.next_label, self.next_label + len(ids), dtype=np.int64)
            self.index.add_with_ids(x, labels)
        self.next_label = int(labels[-1]) + 1
        for tid, lab in zip(ids, labels.tolist()):
            self.label_of[tid] = lab
            self.id_of[lab] = tid

    def drop(self, ids: list[str]) -> None:
        ids = [tid for tid in ids if tid in self.label_of]
        if not ids:
            return
        labels = np.array([self.label_of.pop(tid) for tid in ids], dtype=np.int64)
        for lab in labels.tolist():
            del self.id_of[lab]
        if self.kind == "hnsw":
            self.live[labels] = False
            self.tombstones += len(labels)
            self.selector = None
        elif self.kind == "ivf":
            self.index.remove_ids(faiss.IDSelectorArray(len(labels), faiss.swig_ptr(labels)))
        else:
            self.index.remove_ids(labels)

    def reconstruct(self, labels: Sequence[int]) -> np.ndarray:
        if len(labels) == 0:
            return np.zeros((0, self.index.d), dtype=np.float32)
        return np.asarray(self.index.reconstruct_batch(np.asarray(labels, dtype=np.int64)), dtype=np.float32)


def _with_threads(threads: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a FAISS function with ``threads`` OpenMP threads (a per-thread setting in OpenMP)."""
    saved = faiss.omp_get_max_threads()
    if threads == saved:
        return fn(*args, **kwargs)
    faiss.omp_set_num_threads(threads)
    try:
        return fn(*args, **kwargs)
    finally:
        faiss.omp_set_num_threads(saved)


class _Build:
    """A rebuild running beside the index in use: its thread, result and the changes made meanwhile."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.changes: list[tuple[str, list[str], np.ndarray | None]] = []  # ("add", ids, x) / ("remove", ids, None)
        self.result: _Core | None = None
        self.error: BaseException | None = None
        self.cancelled = False
        self.thread: threading.Thread | None = None


class VectorIndex:
    """Inner-product FAISS index over normalised vectors keyed by string ids; supports removal."""

    def __init__(
        self,
        dim: int,
        kind: str = "auto",
        exact_max: int = 20000,
        hnsw_m: int = 32,
        ef_search: int = 64,
        nlist: int | None = None,
        nprobe: int = 48,
        *,
        ef_construction: int = 40,
        compact_fraction: float = 0.25,
        build_threads: int = 1,
        train_per_list: int = 24,
        background: bool = False,
    ) -> None:
        if dim < 1:
            raise ValueError(f"VectorIndex: dim must be >= 1, got {dim}")
        if kind not in _KINDS:
            raise ValueError(f"VectorIndex: kind must be one of {_KINDS}, got {kind!r}")
        if exact_max < 1 or hnsw_m < 2 or ef_search < 1 or nprobe < 1 or ef_construction < 1:
            raise ValueError("VectorIndex: exact_max, ef_search, nprobe, ef_construction must be >= 1, hnsw_m >= 2")
        if nlist is not None and nlist < 1:
            raise ValueError(f"VectorIndex: nlist must be >= 1, got {nlist}")
        if not 0 < compact_fraction < 1:
            raise ValueError(f"VectorIndex: compact_fraction must be in (0, 1), got {compact_fraction}")
        if train_per_list < 1:
            raise ValueError(f"VectorIndex: train_per_list must be >= 1, got {train_per_list}")
        self.dim = dim
        self.kind = kind
        self.exact_max = exact_max
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.nlist = nlist
        self.nprobe = nprobe
        self.compact_fraction = compact_fraction
        self.build_threads = max(1, build_threads)
        self.train_per_list = train_per_list
        self.background = background
        self.rebuilds = 0  # number of full rebuilds swapped in (kind switches, compactions, IVF retrains)
        self.build_failures = 0
        self._lock = threading.RLock()
        self._build: _Build | None = None
        self._retry_band: tuple[float, float] | None = None  # after a failed build: sizes that do not retry
        self._core = self._empty("hnsw" if kind == "hnsw" else "flat", 0)

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self._core)

    def __contains__(self, id: object) -> bool:
        return id in self._core.label_of

    @property
    def kind_in_use(self) -> str:
        return self._core.kind

    @property
    def tombstones(self) -> int:
        """Removed HNSW slots still held in the graph (0 for other kinds)."""
        return self._core.tombstones

    @property
    def nlist_in_use(self) -> int | None:
        """Number of IVF lists while the IVF index is in use, else None."""
        return int(self._core.index.nlist) if self._core.kind == "ivf" else None

    @property
    def building(self) -> str | None:
        """The kind being built beside the index in use (background mode), else None."""
        with self._lock:
            self._poll()
            return None if self._build is None else self._build.kind

    def add(self, ids: Sequence[str], vecs: np.ndarray) -> None:
        """Add vectors under ``ids``; re-adding an id replaces its vector (the last duplicate wins)."""
        ids = [str(i) for i in ids]
        x = self._prepare(vecs, "vecs")
        if len(ids) != len(x):
            raise ValueError(f"VectorIndex.add: {len(ids)} ids but {len(x)} vectors")
        if not ids:
            return
        last = {tid: row for row, tid in enumerate(ids)}
        if len(last) != len(ids):
            rows = sorted(last.values())
            ids, x = [ids[r] for r in rows], x[rows]
        with self._lock:
            self._poll()
            self._core.drop(ids)
            self._core.insert(ids, x)
            if self._build is not None:
                self._build.changes.append(("add", ids, x))
            self._maybe_rebuild()

    def remove(self, ids: Sequence[str]) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed."""
        with self._lock:
            self._poll()
            present = list(dict.fromkeys(str(i) for i in ids if str(i) in self._core.label_of))
            if not present:
                return 0
            self._core.drop(present)
            if self._build is not None:
                self._build.changes.append(("remove", present, None))
            self._maybe_rebuild()
            return len(present)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (normalised) vectors of ``ids``, shape (len(ids), dim); KeyError for an unknown id."""
        with self._lock:
            self._poll()
            return self._core.reconstruct([self._core.label_of[str(i)] for i in ids])

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top-``k`` by cosine for each query row.

        Returns ``sims`` of shape (nq, k), best first and padded with ``-inf`` where fewer than ``k``
        results exist, and ``ids``: one list per query holding only the real results.
        """
        if k < 1:
            raise ValueError(f"VectorIndex.search: k must be >= 1, got {k}")
        x = self._prepare(q, "q")
        nq = len(x)
        sims = np.full((nq, k), -np.inf, dtype=np.float32)
        with self._lock:
            self._poll()
            core = self._core
            n = len(core)
            if n == 0 or nq == 0:
                return sims, [[] for _ in range(nq)]
            kk = min(k, n)
            params = self._search_params(core, kk)
            # A few queries run on one thread: waking an OpenMP team costs more than the search itself,
            # and far more on a busy machine (measured 23 ms vs 1.7 ms for one query over 10k x 256).
            threads = 1 if nq < _PARALLEL_QUERIES else faiss.omp_get_max_threads()
            if params is None:
                dist, labels = _with_threads(threads, core.index.search, x, kk)
            else:
                dist, labels = _with_threads(threads, core.index.search, x, kk, params=params)
            out_ids: list[list[str]] = []
            for row in range(nq):
                keep = labels[row] >= 0
                got = labels[row][keep]
                sims[row, : len(got)] = dist[row][keep]
                out_ids.append([core.id_of[int(lab)] for lab in got])
        return sims, out_ids

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background build and swap it in; True when none is left running."""
        with self._lock:
            build = self._build
        if build is not None and build.thread is not None:
            build.thread.join(timeout)
        with self._lock:
            self._poll()
            return self._build is None

    def close(self) -> None:
        """Stop a background build (it ends at its next chunk) and free the index."""
        with self._lock:
            if self._build is not None:
                self._build.cancelled = True
                self._build = None
            self._core = self._empty("flat", 0)

    # ------------------------------------------------------------------ internals
    def _prepare(self, vecs: np.ndarray, name: str) -> np.ndarray:
        x = np.asarray(vecs, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"VectorIndex: {name} must have shape (n, {self.dim}), got {np.shape(vecs)}")
        if not np.isfinite(x).all():
            raise ValueError(f"VectorIndex: {name} contains NaN or inf")
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError(f"VectorIndex: {name} contains an all-zero vector (cannot be normalised)")
        return np.ascontiguousarray(x / norms, dtype=np.float32)

    def _nlist_for(self, n: int) -> int:
        if self.nlist is not None:
            return self.nlist
        return int(max(1, min(65536, round(2 * math.sqrt(max(n, 1))), n // _MIN_PER_LIST)))

    def _target_kind(self, n: int, in_use: str) -> str:
        if self.kind in ("flat", "hnsw"):
            return self.kind
        if self.kind == "ivf":
            if in_use == "ivf":
                return "ivf"
            return "ivf" if n >= _MIN_PER_LIST * self._nlist_for(n) else "flat"
        if in_use == "ivf":
            return "ivf" if n >= self.exact_max // 2 else "flat"
        return "ivf" if n >= self.exact_max and n >= _MIN_PER_LIST else "flat"

    def _wanted(self) -> str | None:
        """The kind to rebuild as now, or None."""
        core = self._core
        n = len(core)
        target = self._target_kind(n, core.kind)
        if target != core.kind:
            return target
        if core.kind == "hnsw" and core.tombstones > self.compact_fraction * max(core.index.ntotal, 1):
            return "hnsw"
        if core.kind == "ivf" and self.nlist is None and n >= 4 * core.trained_n:
            return "ivf"
        return None

    def _maybe_rebuild(self) -> None:
        if self._build is not None:
            return
        kind = self._wanted()
        if kind is None:
            return
        if self._retry_band is not None:
            lo, hi = self._retry_band
            if lo < len(self._core) < hi:
                return
            self._retry_band = None
        if not self.background:
            self._core = self._make(kind, self._core, None)
            self.rebuilds += 1
            return
        build = self._build = _Build(kind)
        old = self._core
        build.thread = threading.Thread(target=self._run_build, args=(build, old), name="reidd-index-build",
                                        daemon=True)
        build.thread.start()

    def _run_build(self, build: _Build, old: _Core) -> None:
        try:
            build.result = self._make(build.kind, old, build)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller's thread by _poll
            build.error = exc

    def _poll(self) -> None:
        """Swap in a finished background build (caller holds the lock)."""
        build = self._build
        if build is None or build.thread is None or build.thread.is_alive():
            return
        self._build = None
        if build.result is None:
            if build.error is not None and not build.cancelled:
                self.build_failures += 1
                n = len(self._core)
                self._retry_band = (0.75 * n, 1.25 * n)
                log.error("gallery index: building the %s index beside the %s one failed (%s: %s); "
                          "the %s index stays in use", build.kind, self._core.kind,
                          type(build.error).__name__, build.error, self._core.kind)
            return
        new = build.result
        for op, ids, x in build.changes:
            new.drop(ids)
            if op == "add":
                new.insert(ids, x)
        self._core = new
        self.rebuilds += 1

    def _make(self, kind: str, old: _Core, build: _Build | None) -> _Core:
        """A new core of ``kind`` holding ``old``'s live vectors in insertion order. With ``build``
        (background), vectors are copied out of ``old`` under the lock a chunk at a time, skipping
        entries removed or replaced since the start (the change log brings them)."""
        snapshot = old.ordered() if build is None else self._locked(old.ordered)
        core = self._empty(kind, len(snapshot))

        def fetch(rows: list[tuple[str, int]]) -> tuple[list[str], np.ndarray]:
            if build is None:
                return [t for t, _ in rows], old.reconstruct([lab for _, lab in rows])
            with self._lock:
                if build.cancelled:
                    raise _Cancelled
                rows = [(t, lab) for t, lab in rows if old.label_of.get(t) == lab]
                return [t for t, _ in rows], old.reconstruct([lab for _, lab in rows])

        try:
            if kind == "ivf" and snapshot:
                per = self.train_per_list
                stride = max(1, len(snapshot) // (per * core.index.nlist))
                core.index.cp.min_points_per_centroid = min(per, _MIN_PER_LIST)
                _, sample = fetch(snapshot[::stride])
                core.index.train(np.ascontiguousarray(sample))  # k-means: deterministic at any thread count
                core.trained_n = len(snapshot)
            for s in range(0, len(snapshot), _CHUNK):
                ids, x = fetch(snapshot[s : s + _CHUNK])
                core.insert(ids, x)
        except _Cancelled:
            return None  # type: ignore[return-value]
        return core

    def _locked(self, fn: Callable[[], Any]) -> Any:
        with self._lock:
            return fn()

    def _empty(self, kind: str, n: int) -> _Core:
        if kind == "flat":
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        else:
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, self._nlist_for(n), faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = 1234
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return _Core(kind, index, self.build_threads)

    def _search_params(self, core: _Core, k: int) -> faiss.SearchParameters | None:
        if core.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
            if core.tombstones:
                if core.selector is None:
                    bitmap = np.packbits(core.live, bitorder="little")
                    core.selector = (bitmap, faiss.IDSelectorBitmap(len(core.live), faiss.swig_ptr(bitmap)))
                params.sel = core.selector[1]
            return params
        if core.kind == "ivf":
            params = faiss.SearchParametersIVF()
            params.nprobe = min(self.nprobe, core.index.nlist)
            return params
        return None


class _Cancelled(Exception):
    """A background build was cancelled by close()."""
