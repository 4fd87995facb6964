"""Event delivery with a real redis-server: stream order equals the JSONL file, `events tail` with a consumer
group, Redis outages and hangs without loss or duplicates, the spool handed on after a killed process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from reidd.events.schema import event_to_json
from reidd.events.sinks import JsonlSink, MultiSink, RedisStreamSink, redis_client_factory
from reidd.events.tail import iter_events, main as tail_main

from support import ROOT, free_port, polled
from support.samples import match_event_sample as _match, tracklet_event_sample as _tracklet


class RedisServer:
    """A real redis-server on a free port in a temp dir; can be stopped and restarted on the same port."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self.port = free_port()
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


def _stream_data(client: redis.Redis, stream: str) -> list[str]:
    return [fields[b"data"].decode() for _id, fields in client.xrange(stream)]


def _sink(srv: RedisServer, spool: Path, **kw) -> RedisStreamSink:
    kw.setdefault("retry_max_s", 0.2)
    kw.setdefault("retry_initial_s", 0.05)
    return RedisStreamSink(redis_client_factory(srv.url, timeout_s=0.5), "ev", spool_dir=spool, **kw)



# ---------------------------------------------------------------------------------------------- sinks
def test_stream_in_order_equals_jsonl_and_tail_group(server, tmp_path, capsys):
    metrics: dict[str, float] = {}
    rs = _sink(server, tmp_path / "spool", pubsub_channel="ev-mirror",
               on_metrics=lambda n, v: metrics.__setitem__(n, v))
    sub = server.client().pubsub()
    sub.subscribe("ev-mirror")
    assert polled(lambda: sub.get_message(timeout=0.1) is not None)  # subscribe confirmation
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


def test_redis_outage_no_loss_no_duplicates(server, tmp_path):
    rs = _sink(server, tmp_path / "spool")
    events = [_tracklet(i) for i in range(90)]
    for ev in events[:30]:
        rs.publish(ev)
    assert rs.flush(5)
    server.kill(save=True)  # data kept in the temp dir's dump.rdb
    for ev in events[30:60]:
        rs.publish(ev)
    assert polled(lambda: rs.spool_depth == 30)
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
        assert polled(lambda: rs.publish_failures >= 2 and rs.spool_depth > 0)
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
sys.path.insert(0, sys.argv[1] + "/tests")
from reidd.events.sinks import RedisStreamSink, redis_client_factory
from support.samples import tracklet_event_sample as _tracklet
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
    proc = subprocess.Popen([sys.executable, "-c", _SPOOLER, str(ROOT), server.url, str(spool)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
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
        assert polled(lambda: rs.spooled + rs.refused == 40)
    assert 0 < rs.spooled < 40 and rs.refused == 40 - rs.spooled and rs.spool_depth == rs.spooled
    assert any("refused" in r.getMessage() and "full" in r.getMessage() for r in caplog.records)
    accepted = rs.spooled
    server.start()
    assert rs.flush(10)
    # exactly the accepted prefix arrived, in order; the refused ones were counted, not silently lost
    assert _stream_data(server.client(), "ev") == [event_to_json(ev) for ev in events[:accepted]]
    rs.close()
