"""Event schema, sinks (real redis-server), spool and `reidd events tail`."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from reidd.events.schema import (
    event_from_json,
    event_to_dict,
    event_to_json,
    match_event,
    tracklet_event,
    validate_event,
)
from reidd.events.sinks import JsonlSink, MultiSink, RedisStreamSink, redis_client_factory
from reidd.events.spool import Spool, SpoolFull, SpoolLocked
from reidd.events.tail import iter_events
from reidd.events.tail import main as tail_main

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on a free port in a temp dir; can be stopped and restarted on the same port."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self, save: bool) -> None:
        """SIGKILL the server; with ``save`` its data is first written to dump.rdb, which start() loads."""
        if save:
            redis.Redis(port=self.port).save()
        self.proc.kill()
        self.proc.wait(10)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def server(tmp_path):
    srv = RedisServer(tmp_path)
    srv.start()
    yield srv
    if srv.proc.poll() is None:
        srv.proc.send_signal(signal.SIGCONT)
        srv.proc.terminate()
        srv.proc.wait(10)


def _tracklet(i: int, daemon: str = "d1", cam: str = "c1"):
    return tracklet_event(
        camera_id=cam, local_id=i, tracklet_id=f"{cam}:{i}:0", global_id=100 + i, first_frame=10 * i,
        last_frame=10 * i + 9, first_ts=i * 0.4, last_ts=i * 0.4 + 0.36, live=False,
        box_summary={"first_xyxy": [1.0, 2.0, 30.0, 40.0], "mean_area": 812.5}, best_crop=None, cls=2,
        num_boxes=10, daemon_id=daemon,
    )


def _match(i: int):
    return match_event(
        query={"tracklet_id": f"c2:{i}:0", "camera_id": "c2", "first_ts": 10.0 + i, "last_ts": 12.5 + i},
        gallery={"tracklet_id": f"c1:{i}:0", "camera_id": "c1", "first_ts": 1.0 + i, "last_ts": 3.0 + i},
        similarity=0.8125, transit_s=7.0, global_id=100 + i, daemon_id="d1",
    )


def _stream_data(client: redis.Redis, stream: str) -> list[str]:
    return [fields[b"data"].decode() for _id, fields in client.xrange(stream)]


def _sink(srv: RedisServer, spool: Path, **kw) -> RedisStreamSink:
    kw.setdefault("retry_max_s", 0.2)
    kw.setdefault("retry_initial_s", 0.05)
    return RedisStreamSink(redis_client_factory(srv.url, timeout_s=0.5), "ev", spool_dir=spool, **kw)


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------------------------- schema
def test_schema_valid_events_and_canonical_json():
    for ev in (_tracklet(3), _match(3)):
        obj = json.loads(event_to_json(ev))
        validate_event(obj)
        assert obj["schema_version"] == 1 and obj["type"] == ev.type and obj["event_id"] == ev.event_id
        assert event_from_json(event_to_json(ev)) == ev
    t = json.loads(event_to_json(_tracklet(3)))
    # files: time is 1970-01-01 + media time (last_ts)
    assert t["media_time"] == pytest.approx(1.56) and t["time"] == "1970-01-01T00:00:01.560000Z"
    m = json.loads(event_to_json(_match(3)))
    assert m["media_time"] == 15.5 and m["time"] == "1970-01-01T00:00:15.500000Z"
    live = tracklet_event(**{**_tracklet_kwargs(), "first_ts": 1_700_000_000.0, "last_ts": 1_700_000_002.25,
                             "live": True})
    assert event_to_dict(live)["time"] == "2023-11-14T22:13:22.250000Z"
    # canonical: identical input -> identical bytes and ids; sorted keys, compact
    a, b = event_to_json(_tracklet(5)), event_to_json(_tracklet(5))
    assert a == b and " " not in a and list(json.loads(a)) == sorted(json.loads(a))
    assert _tracklet(5).event_id == _tracklet(5).event_id
    assert len({_tracklet(5).event_id, _tracklet(6).event_id, _tracklet(5, daemon="d2").event_id,
                _match(5).event_id}) == 4


def _tracklet_kwargs() -> dict:
    return dict(camera_id="c9", local_id=1, tracklet_id="c9:1:0", global_id=None, first_frame=0, last_frame=4,
                first_ts=0.0, last_ts=0.16, live=False, box_summary={}, best_crop="crops/c9_1.jpg", cls=7,
                num_boxes=5, daemon_id="d1")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("camera_id"), "camera_id"),
        (lambda d: d.update(cls="car"), "cls"),
        (lambda d: d.update(first_frame=-1), "first_frame"),
        (lambda d: d.update(time="yesterday"), "time"),
        (lambda d: d.update(colour="red"), "colour"),
        (lambda d: d.update(type="alarm"), "type"),
        (lambda d: d.update(schema_version=2), "schema_version"),
    ],
)
def test_schema_rejects_broken_tracklet_naming_the_field(mutate, field):
    obj = json.loads(event_to_json(tracklet_event(**_tracklet_kwargs())))
    validate_event(obj)
    mutate(obj)
    with pytest.raises(ValueError, match=f"'{field}'"):
        validate_event(obj)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["query"].pop("camera_id"), "query.camera_id"),
        (lambda d: d.update(similarity=1.5), "similarity"),
        (lambda d: d["gallery"].update(extra=1), "gallery.extra"),
    ],
)
def test_schema_rejects_broken_match_naming_the_field(mutate, field):
    obj = json.loads(event_to_json(_match(1)))
    mutate(obj)
    with pytest.raises(ValueError, match=f"'{field}'"):
        validate_event(obj)


def test_constructors_reject_bad_values():
    with pytest.raises(ValueError, match="'last_ts'"):
        tracklet_event(**{**_tracklet_kwargs(), "last_ts": float("nan")})
    with pytest.raises(ValueError, match="'local_id'"):
        tracklet_event(**{**_tracklet_kwargs(), "local_id": "7"})
    with pytest.raises(ValueError, match="'gallery.last_ts'"):
        match_event(query={"tracklet_id": "a", "camera_id": "c1", "first_ts": 0, "last_ts": 1},
                    gallery={"tracklet_id": "b", "camera_id": "c2", "first_ts": 0}, similarity=0.5,
                    transit_s=1, global_id=1, daemon_id="d")


# ---------------------------------------------------------------------------------------------- spool
def test_spool_fifo_rotation_restart_and_bound(tmp_path):
    sp = Spool(tmp_path / "s", max_bytes=20_000, segment_bytes=400)
    recs = [f"record-{i:04d}-".encode() * 3 for i in range(60)]
    for r in recs[:3]:
        sp.append(r)
    assert sp.append_many(recs[3:]) == 57
    assert len(sp) == 60 and len(list((tmp_path / "s").glob("*.seg"))) > 3
    assert sp.peek(5) == recs[:5]
    sp.commit(5)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path / "s")
    sp.close()
    sp = Spool(tmp_path / "s", max_bytes=20_000, segment_bytes=400)  # cursor survives a restart
    assert len(sp) == 55 and sp.peek(2) == recs[5:7]
    segs_before = len(list((tmp_path / "s").glob("*.seg")))
    sp.commit(40)
    assert sp.peek(100) == recs[45:]
    assert len(list((tmp_path / "s").glob("*.seg"))) < segs_before  # consumed segments deleted
    sp.commit(15)
    assert len(sp) == 0 and sp.disk_bytes == 0
    n = sp.append_many([b"x" * 100] * 500)  # 8-byte header per record: 185 fit in 20,000 bytes
    assert n == 20_000 // 108 and len(sp) == n and sp.disk_bytes <= 20_000
    with pytest.raises(SpoolFull):
        sp.append(b"x" * 100)
    assert len(sp) == n
    sp.close()


def test_spool_torn_last_record_is_ignored(tmp_path):
    sp = Spool(tmp_path / "s")
    for r in (b"alpha", b"beta", b"gamma"):
        sp.append(r)
    sp.close()
    seg = sorted((tmp_path / "s").glob("*.seg"))[-1]
    with open(seg, "ab") as fh:  # a record whose header promises 100 bytes, cut short by a crash
        fh.write((100).to_bytes(4, "big") + (0).to_bytes(4, "big") + b"partial")
    sp = Spool(tmp_path / "s")
    assert len(sp) == 3 and sp.torn_records == 1 and sp.peek(10) == [b"alpha", b"beta", b"gamma"]
    sp.append(b"delta")  # appends continue after the cut
    assert sp.peek(10) == [b"alpha", b"beta", b"gamma", b"delta"]
    sp.close()
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF  # corrupt the last record's payload: CRC mismatch
    seg.write_bytes(bytes(data))
    sp = Spool(tmp_path / "s")
    assert sp.peek(10) == [b"alpha", b"beta", b"gamma"] and sp.torn_records == 1
    sp.close()


# ---------------------------------------------------------------------------------------------- sinks
def test_stream_in_order_equals_jsonl_and_tail_group(server, tmp_path, capsys):
    metrics: dict[str, float] = {}
    rs = _sink(server, tmp_path / "spool", pubsub_channel="ev-mirror",
               on_metrics=lambda n, v: metrics.__setitem__(n, v))
    sub = server.client().pubsub()
    sub.subscribe("ev-mirror")
    assert _wait(lambda: sub.get_message(timeout=0.1) is not None)  # subscribe confirmation
    jsonl = tmp_path / "out" / "events.jsonl"
    sink = MultiSink([rs, JsonlSink(jsonl)])
    events = [_tracklet(i) if i % 3 else _match(i) for i in range(40)]
    for ev in events:
        sink.publish(ev)
    assert sink.flush(10)
    lines = jsonl.read_text().splitlines()
    assert lines == [event_to_json(ev) for ev in events]
    assert _stream_data(server.client(), "ev") == lines
    assert rs.published == 40 and metrics["published"] == 40 and rs.spool_depth == 0
    mirrored: list[str] = []
    deadline = time.monotonic() + 5
    while len(mirrored) < 40 and time.monotonic() < deadline:
        msg = sub.get_message(timeout=0.1)
        if msg and msg["type"] == "message":
            mirrored.append(msg["data"].decode())
    assert mirrored == lines

    # a consumer group subscriber gets every event once, acknowledges them, resumes after them
    base = ["events", "tail", "--redis-url", server.url, "--stream", "ev", "--group", "g1", "--consumer", "c1",
            "--from-start", "--json"]
    assert tail_main(base + ["--count", "40"]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    assert server.client().xpending("ev", "g1")["pending"] == 0
    # a consumer that crashed before acknowledging gets its pending entries again first
    gen = iter_events(server.client(), "ev", group="g2", consumer="c1", from_start=True, timeout=1, read_count=3)
    unacked = [next(gen)[1]["data"] for _ in range(3)]
    gen.close()
    assert tail_main(base[:7] + ["g2", "--consumer", "c1", "--json", "--count", "4"]) == 0
    assert capsys.readouterr().out.splitlines() == unacked + lines[3:4] and unacked == lines[:3]
    assert server.client().xpending("ev", "g2")["pending"] == 0
    sink.publish(_tracklet(99))
    assert sink.flush(5)
    assert tail_main(base + ["--timeout", "0.5"]) == 0
    assert capsys.readouterr().out.splitlines() == [event_to_json(_tracklet(99))]
    # readable format and type filter, plain XREAD from the start, Redis URL and stream from a config
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(f"cameras:\n  - id: c1\n    url: cam.mp4\ngallery:\n  redis_url: {server.url}\n"
                   "events:\n  stream: ev\n")
    assert tail_main(["events", "tail", "--config", str(cfg), "--from-start", "--type", "match",
                      "--timeout", "0.3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 14 and all(" match " in line and "c2:" in line for line in out)
    sink.close()
    sub.close()


def test_tail_bad_input(tmp_path, capsys):
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text("cameras:\n  - id: c1\n    url: missing.mp4\n")
    assert tail_main(["events", "tail", "--config", str(cfg)]) == 2
    assert "--redis-url" in capsys.readouterr().err
    assert tail_main(["events", "tail", "--redis-url", "http://x", "--count", "1"]) == 2
    assert "--redis-url" in capsys.readouterr().err
    assert tail_main(["events", "tail", "--redis-url", "redis://127.0.0.1:1", "--group", "g"]) == 2
    assert "--consumer" in capsys.readouterr().err


def test_redis_outage_no_loss_no_duplicates(server, tmp_path):
    rs = _sink(server, tmp_path / "spool")
    events = [_tracklet(i) for i in range(90)]
    for ev in events[:30]:
        rs.publish(ev)
    assert rs.flush(5)
    server.kill(save=True)  # data kept in the temp dir's dump.rdb
    for ev in events[30:60]:
        rs.publish(ev)
    assert _wait(lambda: rs.spool_depth == 30)
    assert rs.flush(0.3) is False and rs.publish_failures >= 1
    server.start()
    for ev in events[60:]:
        rs.publish(ev)
    assert rs.flush(10)
    assert rs.spool_depth == 0 and rs.spooled >= 30
    assert _stream_data(server.client(), "ev") == [event_to_json(ev) for ev in events]
    rs.close()


def test_hung_redis_ambiguous_timeouts_do_not_duplicate(server, tmp_path):
    """SIGSTOP the server: requests time out on the client and may still be applied after SIGCONT."""
    rs = _sink(server, tmp_path / "spool")
    events = [_tracklet(i) for i in range(40)]
    for ev in events[:10]:
        rs.publish(ev)
    assert rs.flush(5)
    server.proc.send_signal(signal.SIGSTOP)
    try:
        for ev in events[10:30]:
            rs.publish(ev)
            time.sleep(0.03)
        assert _wait(lambda: rs.publish_failures >= 2 and rs.spool_depth > 0)
    finally:
        server.proc.send_signal(signal.SIGCONT)
    for ev in events[30:]:
        rs.publish(ev)
    assert rs.flush(10)
    assert _stream_data(server.client(), "ev") == [event_to_json(ev) for ev in events]
    assert rs.published + rs.duplicates >= 40
    rs.close()


def test_same_event_twice_is_one_entry(server, tmp_path):
    rs = _sink(server, tmp_path / "spool")
    ev = _tracklet(1)
    rs.publish(ev)
    rs.publish(ev)
    rs.publish(_tracklet(2))
    assert rs.flush(5)
    assert _stream_data(server.client(), "ev") == [event_to_json(ev), event_to_json(_tracklet(2))]
    assert rs.published == 2 and rs.duplicates == 1
    assert 0 < server.client().ttl(f"ev:seen:{ev.event_id}") <= 7 * 86400
    rs.close()
    # a second sink (another process after a restart) retrying the same events adds nothing
    rs2 = _sink(server, tmp_path / "spool")
    rs2.publish(ev)
    assert rs2.flush(5) and rs2.duplicates == 1 and server.client().xlen("ev") == 2
    rs2.close()


_SPOOLER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from reidd.events.sinks import RedisStreamSink, redis_client_factory
from tests.test_events import _tracklet
rs = RedisStreamSink(redis_client_factory(sys.argv[2], timeout_s=0.5), "ev", spool_dir=sys.argv[3])
for i in range(25):
    rs.publish(_tracklet(i))
while rs.spool_depth < 25:
    time.sleep(0.02)
print("spooled", flush=True)
time.sleep(60)
"""


def test_killed_process_spool_is_delivered_by_next_sink(server, tmp_path):
    spool = tmp_path / "spool"
    server.kill(save=False)
    proc = subprocess.Popen([sys.executable, "-c", _SPOOLER, str(REPO), server.url, str(spool)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "spooled"
    finally:
        proc.kill()  # a crash: no close(), no flush
        proc.wait(10)
    server.start()
    rs = _sink(server, spool)
    assert rs.flush(10) and rs.spool_depth == 0
    assert _stream_data(server.client(), "ev") == [event_to_json(_tracklet(i)) for i in range(25)]
    rs.close()


def test_spool_bound_refuses_with_counter_and_log(server, tmp_path, caplog):
    server.kill(save=False)
    rs = _sink(server, tmp_path / "spool", spool_max_mb=8000 / (1024 * 1024))
    events = [_tracklet(i) for i in range(40)]
    with caplog.at_level(logging.ERROR, logger="reidd.events.sinks"):
        for ev in events:
            rs.publish(ev)
        assert _wait(lambda: rs.spooled + rs.refused == 40)
    assert 0 < rs.spooled < 40 and rs.refused == 40 - rs.spooled and rs.spool_depth == rs.spooled
    assert any("refused" in r.getMessage() and "full" in r.getMessage() for r in caplog.records)
    accepted = rs.spooled
    server.start()
    assert rs.flush(10)
    # exactly the accepted prefix arrived, in order; the refused ones were counted, not silently lost
    assert _stream_data(server.client(), "ev") == [event_to_json(ev) for ev in events[:accepted]]
    rs.close()


def test_jsonl_sink_reopens_after_rotation(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, check_every_s=0.0)
    sink.publish(_tracklet(1))
    path.rename(tmp_path / "events.jsonl.1")  # logrotate's default: rename, then the writer must reopen
    sink.publish(_tracklet(2))
    path.unlink()  # or delete it
    sink.publish(_tracklet(3))
    sink.close()
    assert [json.loads(x)["local_id"] for x in (tmp_path / "events.jsonl.1").read_text().splitlines()] == [1]
    assert [json.loads(x)["local_id"] for x in path.read_text().splitlines()] == [3]
    assert sink.published == 3 and sink.publish_failures == 0


def test_jsonl_sink_keeps_one_line_per_event_across_restarts(tmp_path):
    """A daemon restarted on the same files emits its events again: the file keeps one line per event id."""
    path = tmp_path / "events.jsonl"
    first = JsonlSink(path)
    for i in (1, 2, 3):
        first.publish(_tracklet(i))
    first.publish(_tracklet(2))  # a repeat within one run too
    first.close()
    assert first.duplicates == 1
    again = JsonlSink(path)  # a new process: the ids are read back from the file
    for i in (1, 2, 3, 4):
        again.publish(_tracklet(i))
    again.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [e["local_id"] for e in lines] == [1, 2, 3, 4] and again.duplicates == 3
    small = JsonlSink(path)
    small.remember = 2  # the memory is bounded: only the newest ids are kept
    for i in (5, 6, 7):
        small.publish(_tracklet(i))
    assert len(small._seen) == 2
    small.publish(_tracklet(5))  # forgotten, so written again: the bound is a window, not a guarantee
    small.close()
    assert [json.loads(x)["local_id"] for x in path.read_text().splitlines()][-4:] == [5, 6, 7, 5]
