"""The Redis-backed gallery with a real redis-server: the embedded server, connection errors, entries and
global ids shared by several daemons, TTL on the wall and replay clocks, the size bound, stream re-sync."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import redis

from reidd.config import GalleryConfig
from reidd.context import Clock
from reidd.gallery.redis_server import EmbeddedRedis, RedisUnavailable, connect
from reidd.gallery.store import Gallery, GalleryEntry

from support.samples import unit_vectors as _unit


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


# --------------------------------------------------------------------------- embedded Redis / connect
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    emb = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False)
    emb.start()
    yield emb
    pid = emb.pid
    emb.stop()
    assert pid is not None and not _pid_alive(pid)


def test_embedded_redis_persists_across_restart_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with EmbeddedRedis(state) as first:
        assert first.url.startswith(f"redis://:{first.password}@127.0.0.1:") and first.port > 0
        assert len(first.password) >= 24
        with pytest.raises(redis.exceptions.AuthenticationError):  # no password, no gallery
            redis.Redis(port=first.port, socket_timeout=2).get("anything")
        assert (state / "redis.conf").stat().st_mode & 0o077 == 0 and state.stat().st_mode & 0o077 == 0
        client = redis.Redis.from_url(first.url)
        assert client.ping()
        client.set("reidd-test:k", b"kept")
        client.close()
        with pytest.raises(RedisUnavailable, match="state_dir"):
            EmbeddedRedis(state).start()  # one server per state_dir
        pid = first.pid
    assert pid is not None and not _pid_alive(pid)
    assert first.pid is None
    first.stop()  # idempotent

    second = EmbeddedRedis(state)
    second.start()
    try:
        client = redis.Redis.from_url(second.url)
        assert client.get("reidd-test:k") == b"kept"
        client.close()
    finally:
        pid = second.pid
        second.stop()
    assert pid is not None and not _pid_alive(pid)


def test_connect_starts_embedded_server_only_without_url(tmp_path: Path, server: EmbeddedRedis) -> None:
    unused = tmp_path / "unused"
    client, emb = connect(GalleryConfig(redis_url=server.url, state_dir=str(unused)))
    try:
        assert emb is None
        assert client.ping()
        assert not unused.exists()  # never started a server
    finally:
        client.close()

    client, emb = connect(GalleryConfig(state_dir=str(tmp_path / "own")))
    try:
        assert emb is not None and emb.pid is not None
        assert client.ping()
        assert (tmp_path / "own" / "redis.conf").is_file()
    finally:
        client.close()
        pid = emb.pid
        emb.stop()
    assert not _pid_alive(pid)


def test_connect_bad_url_gives_clear_error_without_password(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = GalleryConfig(redis_url=f"redis://:hunter2@127.0.0.1:{port}/0", state_dir=str(tmp_path / "s"))
    with pytest.raises(RedisUnavailable) as info:
        connect(cfg)
    msg = str(info.value)
    assert "gallery.redis_url" in msg and f"127.0.0.1:{port}" in msg and "***" in msg
    assert "hunter2" not in msg
    assert not (tmp_path / "s").exists()
    with pytest.raises(RedisUnavailable, match="invalid Redis URL"):
        connect(GalleryConfig(redis_url="http://example.invalid", state_dir=str(tmp_path)))


# --------------------------------------------------------------------------- Gallery
def _cfg(**kw) -> GalleryConfig:
    return GalleryConfig(namespace=f"t{uuid.uuid4().hex[:10]}", **kw)


@pytest.fixture()
def client(server: EmbeddedRedis):
    c = redis.Redis.from_url(server.url)
    yield c
    c.close()


def _entry(tid: str, cam: str, vec: np.ndarray, ts: float, gid: int = 0, **attrs) -> GalleryEntry:
    return GalleryEntry(tid, cam, ts - 2.0, ts, vec, gid, dict(attrs))


@pytest.mark.parametrize("kind", ["auto", "hnsw"])
def test_gallery_add_search_and_load(client: redis.Redis, kind: str) -> None:
    rng = np.random.default_rng(4)
    d = 16
    cfg = _cfg(index=kind)
    vecs = _unit(rng, 30, d)
    now = time.time()
    g = Gallery(client, d, cfg)
    for i in range(30):
        g.add(_entry(f"cam{i % 3}:{i}:0", f"cam{i % 3}", vecs[i], now + i, gid=i, cls=2, num_boxes=i))
    assert len(g) == 30
    hits = g.search(vecs[7] * 3.0, 5)
    assert hits[0][0].tracklet_id == "cam1:7:0" and hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    top = hits[0][0]
    assert top.camera_id == "cam1" and top.global_id == 7 and top.attributes == {"cls": 2, "num_boxes": 7}
    np.testing.assert_allclose(top.embedding, vecs[7], atol=1e-6)
    others = g.search(vecs[7], 10, exclude_camera="cam1")
    assert len(others) == 10 and all(e.camera_id != "cam1" for e, _ in others)
    assert client.ttl(f"{cfg.namespace}:gallery:e:cam1:7:0") > 0

    fresh = Gallery(client, d, cfg)
    assert len(fresh) == 0
    assert fresh.load() == 30 and len(fresh) == 30 and fresh.index_kind == ("hnsw" if kind == "hnsw" else "flat")
    assert [(e.tracklet_id, round(s, 5)) for e, s in fresh.search(vecs[11], 5)] == [
        (e.tracklet_id, round(s, 5)) for e, s in g.search(vecs[11], 5)
    ]
    with pytest.raises(ValueError, match="expected 16"):
        g.add(_entry("bad", "cam0", np.ones(8, np.float32), now))


def test_two_daemons_share_entries_and_global_ids(client: redis.Redis, server: EmbeddedRedis) -> None:
    rng = np.random.default_rng(5)
    d = 16
    cfg = _cfg()
    other = redis.Redis.from_url(server.url)
    a = Gallery(client, d, cfg, daemon_id="A")
    b = Gallery(other, d, cfg, daemon_id="B")
    v = _unit(rng, 3, d)
    now = time.time()
    a.add(_entry("c1:1:0", "c1", v[0], now))
    assert len(b) == 0 and b.search(v[0], 1) == []
    assert b.sync() == 1
    assert b.search(v[0], 1)[0][0].tracklet_id == "c1:1:0"
    b.add(_entry("c2:1:0", "c2", v[1], now))
    assert b.sync() == 0 and len(b) == 2  # its own message is not applied twice
    gid = a.allocate_global_id()
    a.set_global_id("c1:1:0", gid)
    assert a.get("c1:1:0").global_id == gid
    assert b.sync() == 1 and b.get("c1:1:0").global_id == gid  # the id change reaches B
    assert a.sync() == 1 and len(a) == 2  # and B's entry reaches A
    assert client.hget(f"{cfg.namespace}:gallery:e:c1:1:0", "gid") == str(gid).encode()
    with pytest.raises(KeyError):
        a.set_global_id("never:1:0", 5)
    other.close()


def test_ttl_expiry_wall_clock_and_replay_clock(client: redis.Redis, server: EmbeddedRedis) -> None:
    rng = np.random.default_rng(6)
    d = 8
    cfg = _cfg(ttl_s=1.0)
    v = _unit(rng, 2, d)
    a = Gallery(client, d, cfg, daemon_id="A")
    b = Gallery(client, d, cfg, daemon_id="B")
    media = Clock(wall=False)
    replay = Gallery(client, d, cfg, daemon_id="R", clock=media)
    a.add(_entry("c1:1:0", "c1", v[0], time.time()))
    replay.add(_entry("r:1:0", "r", v[1], 0.5))
    assert b.sync() == 1 and len(b) == 1
    time.sleep(1.3)
    assert client.exists(f"{cfg.namespace}:gallery:e:c1:1:0") == 0  # Redis TTL (wall seconds)
    assert b.sync() == 1 and len(b) == 0 and b.search(v[0], 1) == []
    assert a.sync() == 1 and len(a) == 0
    # replay: the wall TTL ran out in Redis, but media time has not passed last_ts + ttl_s
    assert client.exists(f"{cfg.namespace}:gallery:e:r:1:0") == 0
    replay.sync()
    assert len(replay) == 1 and replay.search(v[1], 1)[0][0].tracklet_id == "r:1:0"
    media.advance(1.6)
    assert replay.search(v[1], 1) == []  # filtered as soon as media time passes the expiry
    replay.sync()
    assert len(replay) == 0


def test_allocate_global_id_is_unique_across_clients(server: EmbeddedRedis) -> None:
    cfg = _cfg()
    got: list[list[int]] = [[], []]

    def work(slot: int) -> None:
        c = redis.Redis.from_url(server.url)
        g = Gallery(c, 8, cfg, daemon_id=f"D{slot}")
        got[slot] = [g.allocate_global_id() for _ in range(500)]
        c.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = got[0] + got[1]
    assert len(every) == 1000 and len(set(every)) == 1000
    # one counter: the ids are consecutive from the first id of the epoch (a time in microseconds)
    first = int(redis.Redis.from_url(server.url).get(f"{cfg.namespace}:global_id:epoch"))
    assert sorted(every) == list(range(first, first + 1000)) and first > 1_700_000_000 * 10**6


def test_max_entries_bound_evicts_oldest(client: redis.Redis) -> None:
    rng = np.random.default_rng(7)
    d = 8
    cfg = _cfg(max_entries=5)
    g = Gallery(client, d, cfg)
    v = _unit(rng, 9, d)
    now = time.time()
    for i in range(8):
        g.add(_entry(f"c:{i}:0", "c", v[i], now + i))
    assert len(g) == 5 and g.stats["evicted"] == 3
    assert {e.tracklet_id for e, _ in g.search(v[0], 10)} == {f"c:{i}:0" for i in range(3, 8)}
    g.add(_entry("c:old:0", "c", v[8], now - 100))  # older than all: evicted at once
    assert len(g) == 5 and g.stats["evicted"] == 4 and g.search(v[8], 1)[0][0].tracklet_id != "c:old:0"
    assert g.get("c:0:0") is not None  # still in Redis, the source of truth
    fresh = Gallery(client, d, cfg)
    assert fresh.load() == 5  # loading honours the bound too, keeping the newest


def test_sync_reloads_when_stream_was_trimmed(client: redis.Redis) -> None:
    d = 4
    cfg = _cfg(max_entries=1000)  # stream MAXLEN ~1000
    a = Gallery(client, d, cfg, daemon_id="A")
    b = Gallery(client, d, cfg, daemon_id="B")
    v = np.ones(d, np.float32)
    now = time.time()
    a.add(_entry("c:first:0", "c", v, now))
    b.sync()
    assert a.stream_maxlen == 1000
    for i in range(2500):  # B falls behind further than the stream keeps
        a.add(_entry(f"c:{i}:0", "c", v + i % 7, now + i))
    assert client.xlen(a.stream_key) < 2500
    b.sync()
    assert b.stats["resyncs"] == 1 and len(b) == len(a) == 1000
    assert {e.tracklet_id for e, _ in b.search(v, 1000)} == {f"c:{i}:0" for i in range(1500, 2500)}


def test_search_of_a_quiet_gallery_does_not_scan_everything(client: redis.Redis) -> None:
    """Few entries from other cameras: the search stops once it has them all, not at the whole index."""
    rng = np.random.default_rng(9)
    d = 16
    vecs = _unit(rng, 403, d)
    now = time.time()
    g = Gallery(client, d, _cfg())
    for i in range(400):
        g.add(_entry(f"busy:{i}:0", "busy", vecs[i], now))
    for i in range(3):  # the quiet camera's entries resemble the query (as real candidates do)
        near = vecs[401] + 0.05 * vecs[400 + i]
        g.add(_entry(f"quiet:{i}:0", "quiet", near / np.linalg.norm(near), now))
    calls: list[int] = []
    real = g._index.search
    g._index.search = lambda q, k: (calls.append(k), real(q, k))[1]  # count the k asked of the index
    hits = g.search(vecs[401], 10, exclude_camera="busy")
    assert sorted(e.tracklet_id for e, _ in hits) == ["quiet:0:0", "quiet:1:0", "quiet:2:0"]
    assert g.search(vecs[0], 10, exclude_camera="quiet")[0][0].tracklet_id == "busy:0:0"
    only_busy = Gallery(client, d, _cfg())
    only_busy.add(_entry("busy:x:0", "busy", vecs[0], now))
    assert only_busy.search(vecs[0], 10, exclude_camera="busy") == []
    assert max(calls) < 403  # all three found early: no longer grown x4 up to the whole index
