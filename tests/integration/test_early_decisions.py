"""Early decisions (``matching.early``) with a real Redis: a tracklet is decided as soon as nothing still to
come can change its decision, and waits while something can (a candidate not yet in the gallery, a rival
query that may still appear or is still in view)."""

from __future__ import annotations

import numpy as np
import pytest

from reidd.config import GalleryConfig
from reidd.context import Clock
from reidd.types import CameraProgress, TrackletEmbedding

from support.samples import matching_config as cfg, moving_tracklet as tracklet, near, unit

DIM = 64
INF = float("inf")
#: no early_score shortcut and the full 13 s wait as the cap: what these tests look at is the waiting itself
PATIENT = {"early_score": None, "wait_s": 13.0}


def progress(ts: float, c1_open=(), c2_open=()) -> dict:
    return {"c1": CameraProgress(ts, tuple(c1_open)), "c2": CameraProgress(ts, tuple(c2_open))}


@pytest.fixture
def setup(redis_proc):
    """A matcher (c1 -> c2 in 2-15 s, wait 13 s) whose gallery holds one c1 vehicle (left at 1.9 s) and four
    c1 strangers, decided early at 5 s; returns (matcher factory, the vehicle's vector, its gid, rng)."""
    import redis

    from reidd.gallery.store import Gallery
    from reidd.match.matcher import Matcher

    rng = np.random.default_rng(3)
    clock = Clock(wall=False)
    v = unit(rng.normal(size=DIM))

    def make(**kw) -> Matcher:
        client = redis.Redis.from_url(redis_proc.url)
        client.flushall()
        m = Matcher(cfg(**kw), Gallery(client, DIM, GalleryConfig(), clock=clock, daemon_id="t"))
        for i in range(5):
            vec = near(v, rng, 0.95) if i == 0 else unit(rng.normal(size=DIM))
            m.submit(TrackletEmbedding(tracklet("c1", i + 1, 0.0 + 0.3 * i, 100.0 + 150 * i, 0.0), vec, 8))
        assert m.decide(5.0) == []  # without progress: the wait (6.5 s after 3.1 with early, 13 s without)
        first = m.decide(20.0 if kw.get("early") is False else 5.0, progress(5.0))  # no camera feeds c1
        assert len(first) == 5 and m.decided_early == (0 if kw.get("early") is False else 5)
        m.gid = next(d.global_id for d in first if d.query.tracklet.local_id == 1)
        m.c1 = [d.query.embedding for d in first]
        return m

    return make, v, rng


def test_a_link_waits_for_the_rivals_that_could_still_appear(setup) -> None:
    make, v, rng = setup
    m = make(**PATIENT)
    m.submit(TrackletEmbedding(tracklet("c2", 1, 6.0, 100.0, 100.0), near(v, rng, 0.9), 8))  # ends at 7.9
    assert m.decide(8.5, progress(8.5)) == []  # a rival may start in c2 until 1.9 + 15 = 16.9
    assert m.decide(17.0, progress(17.0, c2_open=[(12.0, 16.9)])) == []  # one started in the window, still in view
    assert m.decide(17.0, progress(17.0, c2_open=[(3.0, 16.9)])) != []  # one from before the window is no rival
    out_late = make(**PATIENT)
    out_late.submit(TrackletEmbedding(tracklet("c2", 1, 6.0, 100.0, 100.0), near(v, rng, 0.9), 8))
    (d,) = out_late.decide(17.0, progress(17.0))
    assert d.match is not None and d.global_id == out_late.gid and d.decided_ts == 17.0  # 4 s before 7.9 + 13


def test_a_strong_link_or_no_link_is_decided_at_once(setup) -> None:
    make, v, rng = setup
    m = make(early_score=3.0)
    m.submit(TrackletEmbedding(tracklet("c2", 1, 6.0, 100.0, 100.0), near(v, rng, 0.97), 8))
    unlike = unit(-np.sum(m.c1, axis=0))  # unlike every c1 vehicle
    m.submit(TrackletEmbedding(tracklet("c2", 2, 6.5, 500.0, 100.0), unlike, 8))
    m.submit(TrackletEmbedding(tracklet("c2", 3, 30.0, 500.0, 100.0), near(v, rng, 0.97), 8))  # c1 left too long ago
    out = m.decide(8.5, progress(8.5))
    by_lid = {d.query.tracklet.local_id: d for d in out}
    assert set(by_lid) == {1, 2}
    assert by_lid[1].match is not None and by_lid[1].global_id == m.gid and by_lid[1].score >= 3.0
    # no candidate comes close (best below the typical stranger): nothing to come can give it a link
    assert by_lid[2].match is None and by_lid[2].new_vehicle
    assert max(c["score"] for c in by_lid[2].explanation["candidates"]) < 0
    assert {d.decided_ts for d in out} == {8.5}
    (d,) = m.decide(32.5, progress(32.5))  # no candidate in its window at all: decided once it closed
    assert d.query.tracklet.local_id == 3 and d.new_vehicle


def test_nothing_is_decided_while_a_candidate_can_still_arrive(setup) -> None:
    make, v, rng = setup
    m = make(**PATIENT)
    w = unit(rng.normal(size=DIM))
    m.submit(TrackletEmbedding(tracklet("c2", 1, 6.0, 100.0, 100.0), near(w, rng, 0.95), 8))
    # a c1 track last seen at 3.5 is still open (lost, not closed): it may be this query's vehicle
    assert m.decide(8.5, progress(8.5, c1_open=[(1.6, 3.5)])) == []
    # c1 has not processed up to 6 - 2 s yet: a tracklet ending before then may still come
    assert m.decide(8.5, {"c1": CameraProgress(3.9), "c2": CameraProgress(8.5)}) == []
    assert m.decide(8.5, {"c2": CameraProgress(8.5)}) == []  # c1's progress unknown
    m.submit(TrackletEmbedding(tracklet("c1", 9, 1.6, 100.0, 0.0), w, 8))  # it closes: ended at 3.5
    out = m.decide(8.6, progress(8.6))  # c1's tracklet is decided (to the gallery) first, the query after it
    assert [d.query.tracklet.camera_id for d in out] == ["c1"]
    assert m.decide(18.0, progress(18.0)) == []  # its rivals may start until 3.5 + 15 s
    (d,) = m.decide(18.6, progress(18.6))
    assert d.match is not None and d.match.gallery_id == out[0].query.tracklet.tracklet_id


def test_a_later_better_rival_still_wins(setup) -> None:
    """The rule that keeps early decisions right: a weaker query that closed first does not take the entry
    from a stronger one that appears later inside the window."""
    make, v, rng = setup
    m = make(**PATIENT)
    m.submit(TrackletEmbedding(tracklet("c2", 1, 4.5, 100.0, 100.0), near(v, rng, 0.75), 8))  # ends 6.4
    assert m.decide(9.0, progress(9.0)) == []
    m.submit(TrackletEmbedding(tracklet("c2", 2, 9.0, 100.0, 100.0), near(v, rng, 0.97), 8))  # ends 10.9
    out = m.decide(17.0, progress(17.0))
    by_lid = {d.query.tracklet.local_id: d for d in out}
    assert by_lid[2].match is not None and by_lid[2].global_id == m.gid
    assert by_lid[1].match is None and by_lid[1].global_id != m.gid


def test_end_of_input_decides_what_is_left_at_the_last_time_seen(setup) -> None:
    make, v, rng = setup
    m = make(**PATIENT)
    m.submit(TrackletEmbedding(tracklet("c2", 1, 6.0, 100.0, 100.0), near(v, rng, 0.9), 8))
    assert m.decide(9.0, progress(9.0)) == []
    (d,) = m.decide(None)
    assert d.match is not None and d.decided_ts == 9.0


def test_early_off_waits_the_full_window(setup) -> None:
    make, v, rng = setup
    m = make(early=False)
    m.submit(TrackletEmbedding(tracklet("c2", 1, 6.0, 100.0, 100.0), near(v, rng, 0.9), 8))
    m.submit(TrackletEmbedding(tracklet("c2", 2, 6.5, 500.0, 100.0), unit(rng.normal(size=DIM)), 8))
    assert m.decide(17.0, progress(INF)) == []
    assert len(m.decide(21.5, progress(INF))) == 2  # 13 s after each ended (7.9, 8.4)
