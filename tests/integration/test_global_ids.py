"""Global ids never name two vehicles, whatever happens to Redis (issue 22, part 1).

Real redis-servers throughout: a FLUSHALL between two daemons' runs, a restart with no data in the middle
of a run (the server stopped, its files deleted, started again on the same port), a counter set back (a
stale backup restored), and the whole re-ID side (ReidRuntime: matcher, gallery, event sinks, readiness,
metrics) across such a restart."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import redis

from reidd.config import GalleryConfig, load_config
from reidd.context import Clock, RunContext
from reidd.gallery.store import Gallery, GalleryEntry
from reidd.telemetry import Metrics
from reidd.types import TrackletEmbedding

from support import RedisProc, polled
from support.samples import moving_tracklet, unit

DIM = 16
JSON_SAFE = 2**53


def _gallery(url: str, daemon: str, **kw) -> Gallery:
    g = Gallery(redis.Redis.from_url(url), DIM, GalleryConfig(ttl_s=3600.0), clock=Clock(wall=True),
                daemon_id=daemon, **kw)
    g.load()
    return g


def _entry(tid: str, cam: str, gid: int, rng: np.random.Generator) -> GalleryEntry:
    now = time.time()
    return GalleryEntry(tid, cam, now - 2, now - 1, unit(rng.normal(size=DIM)), gid, {"cls": 2})


def _restart_empty(srv: RedisProc) -> None:
    """Stop the server and start it again on the same port with none of its data (no persistence)."""
    srv.stop()
    shutil.rmtree(srv.dir)
    srv.dir.mkdir(parents=True)
    srv.start()


def test_ids_after_a_flushall_between_runs_never_repeat(tmp_path: Path) -> None:
    srv = RedisProc(tmp_path / "redis").start()
    try:
        first = _gallery(srv.url, "run-1")
        a = [first.allocate_global_id() for _ in range(200)]
        first.close()
        redis.Redis.from_url(srv.url).flushall()
        second = _gallery(srv.url, "run-2")  # a new process: it knows nothing of the first run's ids
        b = [second.allocate_global_id() for _ in range(200)]
        assert len(set(a)) == 200 and len(set(b)) == 200
        assert min(b) > max(a), (a[-3:], b[:3])
        assert max(b) < JSON_SAFE
        assert all(isinstance(i, int) for i in a + b)
    finally:
        srv.stop()


def test_redis_restarting_empty_mid_run_is_noticed_counted_and_repaired(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="reidd.gallery.store")
    rng = np.random.default_rng(0)
    srv = RedisProc(tmp_path / "redis").start()
    try:
        a, b = _gallery(srv.url, "daemon-a"), _gallery(srv.url, "daemon-b")
        a_ids = [a.allocate_global_id() for _ in range(3)]
        b_ids = [b.allocate_global_id() for _ in range(3)]
        for i, gid in enumerate(a_ids):
            a.add(_entry(f"c1:{i}:0", "c1", gid, rng))
        for i, gid in enumerate(b_ids):
            b.add(_entry(f"c2:{i}:0", "c2", gid, rng))
        a.sync(), b.sync()
        assert len(a) == len(b) == 6
        assert a.health()["state"] == "ok"

        _restart_empty(srv)
        r = redis.Redis.from_url(srv.url)
        assert r.dbsize() == 0
        # a's connection broke with the restart: the first call may fail, as in the daemon (retried next tick)
        polled(lambda: _quiet(a.sync), timeout=10)
        assert a.stats["data_loss"] == 1
        health = a.health()
        assert health["state"] == "degraded" and "Redis lost the gallery" in health["reason"], health
        warnings = [rec for rec in caplog.records if rec.levelno == logging.WARNING and "lost reidd's data" in rec.getMessage()]
        assert len(warnings) == 1, [w.getMessage() for w in warnings]
        # a wrote its own live entries back, not b's
        assert all(r.exists(f"reidd:gallery:e:c1:{i}:0") for i in range(3))
        assert not any(r.exists(f"reidd:gallery:e:c2:{i}:0") for i in range(3))

        new = a.allocate_global_id()
        assert new > max(a_ids + b_ids) and new < JSON_SAFE

        polled(lambda: _quiet(b.sync), timeout=10)  # b notices too (the epoch it knew is replaced) ...
        assert b.stats["data_loss"] == 1
        assert all(r.exists(f"reidd:gallery:e:c2:{i}:0") for i in range(3))  # ... and writes its own back
        assert b.allocate_global_id() > new
        # a picks b's entries up again through the new change stream, and keeps matching against all six
        a.sync()
        assert len(a) == 6 and a.get("c2:0:0") is not None
        # the loss is counted once, not at every later sync
        a.sync(), b.sync()
        assert a.stats["data_loss"] == b.stats["data_loss"] == 1
        assert len([rec for rec in caplog.records if "lost reidd's data" in rec.getMessage()]) == 2
    finally:
        srv.stop()


def _quiet(fn) -> bool:
    try:
        fn()
        return True
    except redis.RedisError:
        return False


def test_a_counter_set_back_below_held_ids_is_raised_above_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    srv = RedisProc(tmp_path / "redis").start()
    try:
        g = _gallery(srv.url, "d")
        ids = [g.allocate_global_id() for _ in range(5)]
        g.add(_entry("c1:1:0", "c1", ids[-1], rng))
        r = redis.Redis.from_url(srv.url)
        r.set("reidd:global_id", ids[0])  # a stale backup restored: the counter went back, the epoch stayed
        nxt = g.allocate_global_id()
        assert nxt > max(ids)
        assert g.stats["data_loss"] == 1
        # another daemon that never saw those ids sees the raised counter
        other = _gallery(srv.url, "other")
        assert other.allocate_global_id() > nxt
    finally:
        srv.stop()


def test_a_private_replay_redis_counts_from_one_and_an_old_counter_goes_on(tmp_path: Path) -> None:
    srv = RedisProc(tmp_path / "redis").start()
    try:
        g = _gallery(srv.url, "replay", time_ids=False)
        assert [g.allocate_global_id() for _ in range(3)] == [1, 2, 3]
        r = redis.Redis.from_url(srv.url)
        r.flushall()
        r.set("reidd:global_id", 41)  # written by a reidd from before id epochs
        g2 = _gallery(srv.url, "upgraded")
        assert g2.allocate_global_id() == 42
        assert r.get("reidd:global_id:epoch") == b"1"
    finally:
        srv.stop()


def test_the_reid_side_across_an_empty_restart_gives_no_id_twice(tmp_path: Path) -> None:
    """The daemon's own re-ID side (matcher, gallery, sinks, readiness, metrics) across a restart of Redis with
    no data: every new vehicle gets an id of its own, the loss is counted and readiness says so."""
    from reidd.runtime import ReidRuntime

    srv = RedisProc(tmp_path / "redis").start()
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(
        "cameras:\n  - id: c1\n    url: cam.mp4\n  - id: c2\n    url: cam2.mp4\ndetector: {type: motion}\n"
        f"gallery: {{redis_url: '{srv.url}'}}\n"
        f"events: {{spool_dir: '{tmp_path / 'spool'}'}}\n"
        "metrics: {enabled: false}\n", encoding="utf-8")
    events = tmp_path / "events.jsonl"
    metrics = Metrics()
    runtime = ReidRuntime(load_config(cfg, check_files=False), RunContext.for_replay(), metrics=metrics,
                          embedding_dim=DIM, events_jsonl=events)
    rng = np.random.default_rng(2)
    try:
        def vehicles(first_local: int, t0: float) -> None:
            embs = [TrackletEmbedding(moving_tracklet("c1", first_local + i, t0 + i, 100.0 + 60 * i, 0.0),
                                      unit(rng.normal(size=DIM)), 8) for i in range(4)]
            runtime.stage.submit_embedded(embs)

        vehicles(1, 0.0)
        runtime.stage.tick(None)
        ok, detail = runtime.ready()
        assert ok and detail["gallery"]["state"] == "ok", detail

        _restart_empty(srv)
        vehicles(10, 100.0)
        assert polled(lambda: _decided(runtime), timeout=20)
        ok, detail = runtime.ready()
        assert ok and detail["gallery"]["state"] == "degraded", detail  # ready (no event lost), but degraded
        assert runtime.gallery.stats["data_loss"] == 1
        text = metrics.render().decode()
        assert "reidd_gallery_data_loss_total 1.0" in text
        runtime.finish()
    finally:
        runtime.close()
        srv.stop()
    got = [json.loads(line) for line in events.read_text().splitlines()]
    tracklets = [e for e in got if e["type"] == "tracklet"]
    assert len(tracklets) == 8
    gids = [e["global_id"] for e in tracklets]
    assert len(set(gids)) == 8, gids  # eight different vehicles, eight ids: none handed out twice


def _decided(runtime) -> bool:
    runtime.stage.tick(None)
    return runtime.matcher.pending_count == 0 and runtime.stage.tracklets == 8
