"""SIGKILL of `reidd run`, then the same config started again on the same Redis: no event contradicts another."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import redis

from support import ROOT, RedisProc
from support.runs import read_jsonl, reid_config, stream_events


def _start(cfg: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "reidd", "run", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _consistent(events: list[dict]) -> None:
    """Every tracklet has one tracklet event; every match agrees with both of its tracklets' events."""
    tracklets = [e for e in events if e["type"] == "tracklet"]
    counts = Counter(e["tracklet_id"] for e in tracklets)
    assert max(counts.values()) == 1, [t for t, n in counts.items() if n > 1]
    gid = {e["tracklet_id"]: e["global_id"] for e in tracklets}
    matches_of: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for m in (e for e in events if e["type"] == "match"):
        q, g = m["query"]["tracklet_id"], m["gallery"]["tracklet_id"]
        matches_of[q].add((g, m["global_id"]))
        assert gid.get(q, m["global_id"]) == m["global_id"], f"match of {q} says gid {m['global_id']}, its event {gid[q]}"
        assert gid.get(g, m["global_id"]) == m["global_id"], f"match to {g} says gid {m['global_id']}, its event {gid[g]}"
    assert all(len(v) == 1 for v in matches_of.values()), {q: v for q, v in matches_of.items() if len(v) > 1}


def test_sigkill_then_restart_is_consistent(scene3, tmp_path: Path, redis_proc: RedisProc) -> None:
    events_path = tmp_path / "events.jsonl"
    cfg = reid_config(scene3, tmp_path, "restart", gallery={"redis_url": redis_proc.url},
                      events={"jsonl": str(events_path), "spool_dir": str(tmp_path / "spool")})
    client = redis.Redis.from_url(redis_proc.url)
    proc = _start(cfg)
    try:
        deadline = time.time() + 150
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if sum(e["type"] == "match" for e in stream_events(client)) >= 3:
                break
        assert proc.poll() is None, "the daemon ended before it could be killed: " + proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGKILL)  # no drain: open tracklets, pending decisions and buffers are lost
        proc.wait(10)
        before = stream_events(client)
        assert any(e["type"] == "match" for e in before)
        proc = _start(cfg)  # the same config again: the files play from the start, the gallery is still there
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err
    after = stream_events(client)
    client.close()
    ids = [e["event_id"] for e in after]
    assert len(ids) == len(set(ids)), "duplicated events in the stream"
    assert after[: len(before)] == before  # nothing published before the kill was replaced
    _consistent(after)
    assert "earlier decision stands" in err or "keeps gid" in err or any(
        (e.get("association") or {}).get("reason", "").startswith("decided before a restart") for e in after)
    # the run went on to the end: every camera's tracklets are there, and matches after the restart point
    assert len([e for e in after if e["type"] == "tracklet"]) > len([e for e in before if e["type"] == "tracklet"])
    jsonl = read_jsonl(events_path)
    jsonl_ids = [e["event_id"] for e in jsonl]
    assert len(jsonl_ids) == len(set(jsonl_ids)), "duplicated lines in the JSONL"
    assert set(jsonl_ids) == set(ids)
    _consistent(jsonl)
    json.dumps(after)  # events stay plain JSON
