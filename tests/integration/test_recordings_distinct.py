"""Two recordings of the same cameras replayed into one Redis stay two recordings; the same recording replayed
again is recognised (issue 22, part 2). Real videos, a real redis-server, the real replay with re-ID."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import redis

from reidd.config import load_config
from reidd.daemon import run_replay
from reidd.sources.identity import recording_tag

from support import RedisProc
from support.runs import read_jsonl, reid_config, stream_events


@pytest.fixture(scope="module")
def two_recordings(tmp_path_factory: pytest.TempPathFactory):
    """Two different recordings (other vehicles, other timings) of the same two cameras c001, c002."""
    from reidd.synth.scene import generate_scene

    a = generate_scene(tmp_path_factory.mktemp("rec-a"), cameras=2, vehicles=4, seed=11, progress=False)
    b = generate_scene(tmp_path_factory.mktemp("rec-b"), cameras=2, vehicles=4, seed=12, progress=False)
    return a, b


def _replay(scene, tmp_path: Path, name: str, url: str) -> list[dict]:
    cfg = reid_config(scene, tmp_path, name, events={"spool_dir": str(tmp_path / f"spool-{name}")})
    out = tmp_path / name
    code, _ = run_replay(load_config(cfg), out, redis_url=url, events_jsonl=out / "events.jsonl")
    assert code == 0
    return read_jsonl(out / "events.jsonl")


def test_two_recordings_of_the_same_cameras_stay_distinct_and_a_rerun_is_deduplicated(
        two_recordings, tmp_path: Path, caplog) -> None:
    a, b = two_recordings
    assert recording_tag(a.videos["c001"]) != recording_tag(b.videos["c001"])
    srv = RedisProc(tmp_path / "redis").start()
    caplog.set_level(logging.INFO, logger="reidd.match")
    try:
        client = redis.Redis.from_url(srv.url)
        ev_a = _replay(a, tmp_path, "a", srv.url)
        n_a = len(stream_events(client))
        assert n_a == len(ev_a) > 0
        caplog.clear()
        ev_b = _replay(b, tmp_path, "b", srv.url)
        # the second recording decided every tracklet itself: nothing inherited from the first
        assert not [r.getMessage() for r in caplog.records if "keeps gid" in r.getMessage()]
        trk_a = {e["tracklet_id"] for e in ev_a if e["type"] == "tracklet"}
        trk_b = {e["tracklet_id"] for e in ev_b if e["type"] == "tracklet"}
        assert trk_a and trk_b and not trk_a & trk_b
        assert {e["daemon_id"] for e in ev_a} != {e["daemon_id"] for e in ev_b}
        assert not {e["event_id"] for e in ev_a} & {e["event_id"] for e in ev_b}
        assert len(stream_events(client)) == n_a + len(ev_b)  # none of b's events dropped as a duplicate

        caplog.clear()
        again = _replay(a, tmp_path, "a-again", srv.url)  # the first recording again: the same events
        assert {e["event_id"] for e in again} == {e["event_id"] for e in ev_a}
        gids = lambda evs: {e["tracklet_id"]: e["global_id"] for e in evs if e["type"] == "tracklet"}  # noqa: E731
        assert gids(again) == gids(ev_a)
        assert len(stream_events(client)) == n_a + len(ev_b)  # all recognised as duplicates
        assert any("keeps gid" in r.getMessage() for r in caplog.records)
    finally:
        srv.stop()
