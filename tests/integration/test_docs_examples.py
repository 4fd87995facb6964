"""docs/events.md's subscriber example, run as written against a real redis-server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis

from reidd.events.schema import event_to_json, match_event, tracklet_event
from reidd.events.sinks import RedisStreamSink, redis_client_factory

from support import ROOT


DOCS = ROOT / "docs"


# --------------------------------------------------------------------------- events.md
def _example(doc: Path, name: str) -> str:
    text = doc.read_text(encoding="utf-8")
    m = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"{doc}: no example '{name}'"
    return m.group(1)


def _events() -> list:
    t1 = tracklet_event(camera_id="gate-north", local_id=4, tracklet_id="gate-north:4:0", global_id=17,
                        first_frame=100, last_frame=160, first_ts=1_700_000_000.0, last_ts=1_700_000_006.0,
                        live=True, box_summary={"largest": [10.0, 20.0, 110.0, 90.0], "largest_frame": 130},
                        best_crop=None, cls=2, num_boxes=61, daemon_id="worker-a")
    m = match_event(query={"tracklet_id": "gate-south:9:0", "camera_id": "gate-south",
                           "first_ts": 1_700_000_030.5, "last_ts": 1_700_000_034.0},
                    gallery={"tracklet_id": "gate-north:4:0", "camera_id": "gate-north",
                             "first_ts": 1_700_000_000.0, "last_ts": 1_700_000_006.0},
                    similarity=0.8123, transit_s=24.5, global_id=17, daemon_id="worker-b")
    t2 = tracklet_event(camera_id="gate-south", local_id=9, tracklet_id="gate-south:9:0", global_id=17,
                        first_frame=5, last_frame=40, first_ts=1_700_000_030.5, last_ts=1_700_000_034.0,
                        live=True, box_summary={}, best_crop=None, cls=2, num_boxes=36, daemon_id="worker-b")
    t3 = tracklet_event(camera_id="gate-east", local_id=1, tracklet_id="gate-east:1:0", global_id=18,
                        first_frame=0, last_frame=9, first_ts=1_700_000_040.0, last_ts=1_700_000_041.0,
                        live=True, box_summary={}, best_crop=None, cls=7, num_boxes=10, daemon_id="worker-b")
    return [t1, m, t2, t3]


class _Subscriber:
    """The doc's example as a process; lines of its output are collected by a reader thread."""

    def __init__(self, script: Path, url: str):
        self.proc = subprocess.Popen([sys.executable, str(script), url, "worker-1"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_lines(self, n: int, timeout: float = 30.0) -> list[str]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.lines) >= n or self.proc.poll() is not None, timeout)
        assert ok and len(self.lines) >= n, (self.lines, self.proc.poll(), self.proc.stderr.read()
                                             if self.proc.poll() is not None else "")
        return self.lines

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _wait_acked(r: redis.Redis, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while r.xpending("reidd:events", "my-app")["pending"]:
        assert time.monotonic() < deadline, "the subscriber did not acknowledge its entries"
        time.sleep(0.05)


def test_events_doc_subscriber_example_runs_against_real_redis(redis_proc, tmp_path: Path) -> None:
    script = tmp_path / "subscriber.py"
    script.write_text(_example(DOCS / "events.md", "subscriber"), encoding="utf-8")
    sink = RedisStreamSink(redis_client_factory(redis_proc.url), "reidd:events", spool_dir=tmp_path / "spool")
    r = redis.Redis.from_url(redis_proc.url, decode_responses=True)
    t1, m, t2, t3 = _events()
    try:
        sink.publish(t1)  # before the group exists: the example's group starts at the stream's beginning
        assert sink.flush(10)
        sub = _Subscriber(script, redis_proc.url)
        try:
            first = sub.wait_lines(1)[0]
            assert "vehicle 17 seen by gate-north" in first and t1.payload["time"] in first
            sink.publish(m)
            assert sink.flush(10)
            second = sub.wait_lines(2)[1]
            assert "vehicle 17: gate-north -> gate-south" in second and "24.5 s" in second and "0.81" in second
            _wait_acked(r)  # both acknowledged (handled first, then XACKed)
        finally:
            sub.stop()
        # a crash after delivery, before XACK: the entry stays pending for worker-1 ...
        sink.publish(t2)
        assert sink.flush(10)
        claimed = r.xreadgroup("my-app", "worker-1", {"reidd:events": ">"}, count=1)
        assert json.loads(claimed[0][1][0][1]["data"])["event_id"] == t2.event_id
        sink.publish(t3)
        assert sink.flush(10)
        # ... and the restarted subscriber handles it first, then the new one, and nothing twice
        sub = _Subscriber(script, redis_proc.url)
        try:
            lines = sub.wait_lines(2)
            assert "vehicle 17 seen by gate-south" in lines[0] and "vehicle 18 seen by gate-east" in lines[1]
            _wait_acked(r)
        finally:
            sub.stop()
        assert len(sub.lines) == 2
        assert [json.loads(f["data"]) for _, f in r.xrange("reidd:events")] == [
            json.loads(event_to_json(e)) for e in (t1, m, t2, t3)]
    finally:
        sink.close()
        r.close()
