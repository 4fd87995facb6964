"""P x K sampling: identities and instances per batch, minimum batch counts."""

from __future__ import annotations

import pytest

from reidd.train.samplers import PKSampler


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pk_sampler() -> None:
    pids = [i // 3 for i in range(30)] + [10]  # 10 identities x 3 images + one with a single image
    sampler = PKSampler(pids, p=4, k=2, seed=7)
    sampler.set_epoch(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 2
    for b in batches:
        ids = [pids[i] for i in b]
        assert len(b) == 8 and len(set(ids)) == 4 and all(ids.count(x) == 2 for x in set(ids))
    assert batches == list(sampler)  # deterministic for an epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches
    with pytest.raises(ValueError, match="only 11 identities"):
        PKSampler(pids, p=12, k=2)


def test_pk_sampler_min_batches_revisits_identities() -> None:
    pids = [i // 3 for i in range(3 * 6)]  # 6 identities x 3 images
    short = PKSampler(pids, 4, 2, seed=1)
    assert len(short) == 1 == len(list(short))
    long = PKSampler(pids, 4, 2, seed=1, min_batches=5)
    batches = list(long)
    assert len(long) == 5 == len(batches)
    for b in batches:
        ids = [pids[i] for i in b]
        assert len(b) == 8 and len(set(ids)) == 4 and all(ids.count(p) == 2 for p in set(ids))
    assert len({pids[i] for b in batches for i in b}) == 6  # every identity comes round
    assert len(PKSampler(pids, 4, 2, min_batches=5, max_batches=3)) == 3
