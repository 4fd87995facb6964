"""In-memory FAISS inner-product index over L2-normalised vectors, keyed by string ids.

Kinds (``kind_in_use``):

* ``flat`` — exact search: ``IndexIDMap2(IndexFlatIP)``; removal is native.
* ``hnsw`` — ``IndexHNSWFlat`` (approximate). FAISS cannot remove vectors from an HNSW graph, so
  removal marks the slot as a *tombstone*: the node stays in the graph (it keeps the graph
  connected) but searches pass an ``IDSelectorBitmap`` of live slots, so tombstones are never
  returned. When tombstones exceed ``compact_fraction`` of the stored vectors the graph is rebuilt
  from the live vectors only (reconstructed from the index's own storage, so no second copy of the
  vectors is kept). Re-adding an id tombstones the old slot and appends a new one.
* ``ivf`` — ``IndexIVFFlat`` with a hash-table direct map (native removal). It needs training,
  so it stays ``flat`` until there are enough vectors (39 per list); ``nlist`` defaults to
  ``4 * sqrt(n)`` at training time (k-means on a strided sample of 64 vectors per list) and the
  index is retrained when it has grown 4x since.

``kind="auto"`` is exact below ``exact_max`` entries and HNSW from there on; it goes back to exact
when the count falls below ``exact_max // 2`` (hysteresis, so a gallery hovering at the threshold
does not rebuild on every add). Every switch rebuilds transparently inside the call that crosses it.

Vectors are L2-normalised on the way in (add and search), so similarities are cosines in [-1, 1].
Searches of fewer than 16 queries run on one OpenMP thread (starting a thread team costs more than
a single-query search); larger batches use FAISS's default.

Determinism: labels are assigned in insertion order and rebuilds re-insert live vectors in that
order. Flat and IVF (fixed k-means seed, strided training sample) are deterministic. FAISS inserts a
batch into an HNSW graph in parallel and the resulting graph can depend on thread scheduling, so
bulk HNSW inserts run with ``build_threads`` OpenMP threads, 1 by default: then every result is a
pure function of the sequence of calls. Raise it to build large graphs faster at the cost of that
guarantee.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np

_KINDS = ("auto", "flat", "hnsw", "ivf")
_MIN_PER_LIST = 39  # FAISS warns below 39 training points per centroid
_TRAIN_PER_LIST = 64  # k-means training sample per IVF list
_PARALLEL_QUERIES = 16  # fewer queries than this are searched on one thread


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
        nprobe: int = 16,
        *,
        ef_construction: int = 40,
        compact_fraction: float = 0.25,
        build_threads: int = 1,
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
        self.rebuilds = 0  # number of full rebuilds (kind switches, compactions, IVF retrains)
        self._label_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next_label = 0
        self._tombstones = 0  # hnsw only: dead slots still in the graph
        self._live: np.ndarray = np.zeros(0, dtype=bool)  # hnsw only: slot -> alive
        self._selector: tuple[np.ndarray, faiss.IDSelectorBitmap] | None = None
        self._ivf_trained_n = 0
        self.kind_in_use = "hnsw" if kind == "hnsw" else "flat"
        self._index = self._new_index(self.kind_in_use, 0)

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self._label_of)

    def __contains__(self, id: object) -> bool:
        return id in self._label_of

    @property
    def tombstones(self) -> int:
        """Removed HNSW slots still held in the graph (0 for other kinds)."""
        return self._tombstones

    @property
    def nlist_in_use(self) -> int | None:
        """Number of IVF lists while the IVF index is in use, else None."""
        return int(self._index.nlist) if self.kind_in_use == "ivf" else None

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
        replaced = [tid for tid in ids if tid in self._label_of]
        if replaced:
            self._drop(replaced)
        target = self._target_kind(len(self) + len(ids))
        if target != self.kind_in_use:
            self._rebuild(target, ids, x)
        else:
            self._insert(ids, x)
        self._maybe_compact()

    def remove(self, ids: Sequence[str]) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed."""
        present = list(dict.fromkeys(str(i) for i in ids if str(i) in self._label_of))
        if not present:
            return 0
        self._drop(present)
        target = self._target_kind(len(self))
        if target != self.kind_in_use:
            self._rebuild(target)
        else:
            self._maybe_compact()
        return len(present)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (normalised) vectors of ``ids``, shape (len(ids), dim); KeyError for an unknown id."""
        labels = np.array([self._label_of[str(i)] for i in ids], dtype=np.int64)
        if len(labels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._index.reconstruct_batch(labels), dtype=np.float32)

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
        n = len(self)
        if n == 0 or nq == 0:
            return sims, [[] for _ in range(nq)]
        kk = min(k, n)
        params = self._search_params(kk)
        # A few queries run on one thread: waking an OpenMP team costs more than the search itself,
        # and far more on a busy machine (measured 23 ms vs 1.7 ms for one query over 10k x 256).
        threads = 1 if nq < _PARALLEL_QUERIES else faiss.omp_get_max_threads()
        if params is None:
            dist, labels = self._with_threads(threads, self._index.search, x, kk)
        else:
            dist, labels = self._with_threads(threads, self._index.search, x, kk, params=params)
        out_ids: list[list[str]] = []
        for row in range(nq):
            keep = labels[row] >= 0
            got = labels[row][keep]
            sims[row, : len(got)] = dist[row][keep]
            out_ids.append([self._id_of[int(lab)] for lab in got])
        return sims, out_ids

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

    def _target_kind(self, n: int) -> str:
        if self.kind in ("flat", "hnsw"):
            return self.kind
        if self.kind == "ivf":
            if self.kind_in_use == "ivf":
                return "ivf"
            return "ivf" if n >= _MIN_PER_LIST * self._nlist_for(n) else "flat"
        if self.kind_in_use == "hnsw":
            return "hnsw" if n >= self.exact_max // 2 else "flat"
        return "hnsw" if n >= self.exact_max else "flat"

    def _nlist_for(self, n: int) -> int:
        if self.nlist is not None:
            return self.nlist
        return int(min(65536, max(16, round(4 * math.sqrt(max(n, 1))))))

    def _new_index(self, kind: str, n: int) -> faiss.Index:
        if kind == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
            return index
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, self._nlist_for(n), faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        return index

    def _insert(self, ids: list[str], x: np.ndarray) -> None:
        """Append to the current index (no kind change)."""
        if self.kind_in_use == "hnsw":
            start = self._index.ntotal
            labels = np.arange(start, start + len(ids), dtype=np.int64)
            self._with_threads(self.build_threads, self._index.add, x)
            self._live = np.concatenate([self._live, np.ones(len(ids), dtype=bool)])
            self._selector = None
        else:
            labels = np.arange(self._next_label, self._next_label + len(ids), dtype=np.int64)
            self._index.add_with_ids(x, labels)
        self._next_label = int(labels[-1]) + 1
        for tid, lab in zip(ids, labels.tolist()):
            self._label_of[tid] = lab
            self._id_of[lab] = tid
        if self.kind_in_use == "ivf" and len(self) >= 4 * self._ivf_trained_n and self.nlist is None:
            self._rebuild("ivf")

    def _drop(self, ids: list[str]) -> None:
        labels = np.array([self._label_of.pop(tid) for tid in ids], dtype=np.int64)
        for lab in labels.tolist():
            del self._id_of[lab]
        if self.kind_in_use == "hnsw":
            self._live[labels] = False
            self._tombstones += len(labels)
            self._selector = None
        elif self.kind_in_use == "ivf":
            self._index.remove_ids(faiss.IDSelectorArray(len(labels), faiss.swig_ptr(labels)))
        else:
            self._index.remove_ids(labels)

    def _maybe_compact(self) -> None:
        if self.kind_in_use == "hnsw" and self._tombstones > self.compact_fraction * max(self._index.ntotal, 1):
            self._rebuild("hnsw")

    def _rebuild(self, kind: str, extra_ids: list[str] | None = None, extra: np.ndarray | None = None) -> None:
        """Rebuild as ``kind`` from the live vectors (insertion order) plus ``extra``."""
        ids = sorted(self._label_of, key=self._label_of.__getitem__)
        x = self.vectors(ids)
        if extra_ids:
            ids = ids + list(extra_ids)
            x = np.concatenate([x, extra]) if len(x) else np.ascontiguousarray(extra)
        self._index = None  # free the old index before building the new one
        self._label_of.clear()
        self._id_of.clear()
        self._next_label = 0
        self._tombstones = 0
        self._live = np.zeros(0, dtype=bool)
        self._selector = None
        self.kind_in_use = kind
        self._index = self._new_index(kind, len(ids))
        self.rebuilds += 1
        if kind == "ivf":
            stride = max(1, len(x) // (_TRAIN_PER_LIST * self._index.nlist))
            self._index.train(np.ascontiguousarray(x[::stride]))
            self._ivf_trained_n = len(x)
        if ids:
            self._insert(ids, x)

    @staticmethod
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

    def _search_params(self, k: int) -> faiss.SearchParameters | None:
        if self.kind_in_use == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
            if self._tombstones:
                if self._selector is None:
                    bitmap = np.packbits(self._live, bitorder="little")
                    self._selector = (bitmap, faiss.IDSelectorBitmap(len(self._live), faiss.swig_ptr(bitmap)))
                params.sel = self._selector[1]
            return params
        if self.kind_in_use == "ivf":
            params = faiss.SearchParametersIVF()
            params.nprobe = min(self.nprobe, self._index.nlist)
            return params
        return None
