"""The matcher with a real Redis: fragments of one vehicle in one camera join one global id."""

from __future__ import annotations

import numpy as np

from reidd.config import GalleryConfig
from reidd.context import Clock
from reidd.types import TrackletEmbedding

from support.samples import matching_config as cfg, moving_tracklet as _tracklet, near, unit


DIM = 64


def test_matcher_joins_fragments_into_one_vehicle(redis_proc) -> None:
    """A c2 track broken in two: both pieces get the c1 vehicle's global id, and only one match is made."""
    import redis

    from reidd.gallery.store import Gallery
    from reidd.match.matcher import Matcher

    rng = np.random.default_rng(5)
    clock = Clock(wall=False)
    gallery = Gallery(redis.Redis.from_url(redis_proc.url), DIM, GalleryConfig(), clock=clock,
                      daemon_id="t")
    m = Matcher(cfg(early=False), gallery)  # the full 13 s wait, as the times below assume
    v = unit(rng.normal(size=DIM))
    strangers = [unit(rng.normal(size=DIM)) for _ in range(4)]
    for i, s in enumerate([v, *strangers]):
        m.submit(TrackletEmbedding(_tracklet("c1", i + 1, 0.0 + i * 0.5, 100.0 + 150 * i, 0.0), s if i else near(v, rng, 0.9), 8))
    clock.advance(17.0)
    first = m.decide(17.0)  # the last c1 tracklet closed at 3.9: ready 13 s later
    assert len(first) == 5 and len({d.global_id for d in first}) == 5
    gid = next(d.global_id for d in first if d.query.tracklet.local_id == 1)
    a = _tracklet("c2", 1, 6.0, 100.0, 100.0)  # 4.1 s after the c1 vehicle left
    b = _tracklet("c2", 2, 8.9, 390.0, 100.0)  # 1 s after a was lost, where a was heading
    m.submit(TrackletEmbedding(a, near(v, rng, 0.9), 8))
    m.submit(TrackletEmbedding(b, near(v, rng, 0.9), 8))
    assert m.fragments_joined == 1 and m.pending_count == 2
    assert m.decide(20.0) == []  # still waiting for rivals (wait_s 13 after the group's last tracklet, 10.8)
    clock.advance(30.0)
    out = m.decide(30.0)
    assert sorted(d.query.tracklet.tracklet_id for d in out) == ["c2:1:0", "c2:2:0"]
    assert {d.global_id for d in out} == {gid}
    assert sum(d.match is not None for d in out) == 1
    linked = next(d for d in out if d.match is not None)
    assert linked.explanation["candidates"][0]["gid"] == gid and "best of" in linked.explanation["reason"]
    # the match carries the matched entry's own times (its event needs them; no second trip to Redis)
    c1 = next(d.query.tracklet for d in first if d.query.tracklet.local_id == 1)
    assert linked.match.gallery_id == c1.tracklet_id
    assert (linked.match.gallery_first_ts, linked.match.gallery_last_ts) == (c1.first_ts, c1.last_ts)
    # each decision says when it was taken, on the clock of the tracklets' times
    assert {d.decided_ts for d in first} == {17.0} and {d.decided_ts for d in out} == {30.0}
