"""P x K identity sampler: each batch holds P identities with K images each."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class PKSampler(Sampler[list[int]]):
    """Yields batches of indices: P identities x K images (drawn with replacement when an identity has
    fewer than K images). Deterministic: epoch ``e`` uses ``random.Random(seed + e)``; call
    :meth:`set_epoch` before each epoch. An epoch visits every identity about once (``len(ids) // P``
    batches), at least ``min_batches`` (identities are revisited) and at most ``max_batches`` when set."""

    def __init__(self, pids: Sequence[int], p: int, k: int, *, seed: int = 0, max_batches: int | None = None,
                 min_batches: int | None = None):
        if p < 2 or k < 2:
            raise ValueError(f"batch_p and batch_k must be >= 2 for triplet mining, got P={p} K={k}")
        self.by_pid: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.by_pid[int(pid)].append(i)
        if len(self.by_pid) < p:
            raise ValueError(f"batch_p={p} but the training set has only {len(self.by_pid)} identities")
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        self.max_batches = max_batches
        self.min_batches = min_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = max(1, len(self.by_pid) // self.p, self.min_batches or 0)
        return min(n, self.max_batches) if self.max_batches else n

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        ids = sorted(self.by_pid)
        order: list[int] = []
        made = 0
        while made < len(self):
            if len(order) < self.p:
                rng.shuffle(ids)
                order += [i for i in ids if i not in order[: self.p]]
            chosen, order = order[: self.p], order[self.p :]
            batch: list[int] = []
            for pid in chosen:
                pool = self.by_pid[pid]
                batch += rng.sample(pool, self.k) if len(pool) >= self.k else rng.choices(pool, k=self.k)
            yield batch
            made += 1
