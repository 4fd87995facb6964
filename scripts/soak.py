#!/usr/bin/env python3
"""Soak test: a long ``reidd run`` on looped input, watching the daemon's resources and its events.

Generates a synthetic scene (``--cameras`` cameras) and plays each camera's video in a loop
(``cameras[].loop: true``: frame numbers and media time keep increasing across the passes), starts a
redis-server on a free port, runs ``reidd run`` on it (played at the native frame rate, as a camera
would deliver it) with re-ID on and metrics served, and every ``--interval`` seconds samples the daemon
process: RSS, thread count, open file descriptors (psutil), plus a few values from its ``/metrics``.
After ``--minutes`` it sends SIGTERM (the daemon drains), then reads the Redis stream and counts

* lost: tracklets the daemon reports closing (its ``tracklet ...`` log lines) without a tracklet event,
* duplicated: event ids seen more than once, and tracklets with more than one tracklet event,
* orphans: tracklet events for tracklets the daemon never reported, match events without the query's
  tracklet event.

Prints one row per sample, a summary and a final JSON line.

  scripts/soak.py [--minutes 10] [--cameras 2] [--out soak-out/] [--vehicles 6] [--interval 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    import redis

    from reidd.gallery.redis_server import find_redis_server

    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--daemonize", "no", "--logfile", str(directory / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            redis.Redis.from_url(url, socket_timeout=0.5).ping()
            return proc, url
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(url: str) -> dict[str, float]:
    """Sums of the samples of each metric of interest (over all label values)."""
    from prometheus_client.parser import text_string_to_metric_families

    want = {"reidd_frames_processed_total": "frames", "reidd_frames_dropped_total": "dropped",
            "reidd_queue_depth": "queue", "reidd_gallery_entries": "gallery",
            "reidd_matcher_pending_tracklets": "pending", "reidd_events_published_total": "published",
            "reidd_gallery_backlog_entries": "backlog", "reidd_event_spool_depth": "spool"}
    out = dict.fromkeys(want.values(), 0.0)
    try:
        code, text = get(url)
    except OSError:
        return {}
    if code != 200:
        return {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in want:
                out[want[s.name]] += s.value
    return out


def sample(proc) -> dict[str, float]:
    with proc.oneshot():
        return {"rss_mb": proc.memory_info().rss / 2**20, "threads": proc.num_threads(), "fds": proc.num_fds()}


def stream_check(redis_url: str, stream: str, reported: list[str]) -> dict:
    """Compare the Redis stream's events with the tracklets the daemon reported closing."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        events = [json.loads(fields[b"data"]) for _, fields in client.xrange(stream)]
    finally:
        client.close()
    ids = [e["event_id"] for e in events]
    tracklet_events = [e["tracklet_id"] for e in events if e["type"] == "tracklet"]
    matches = [e for e in events if e["type"] == "match"]
    rep = set(reported)
    got = set(tracklet_events)
    return {
        "events": len(events),
        "tracklet_events": len(tracklet_events),
        "match_events": len(matches),
        "tracklets_reported": len(reported),
        "tracklets_reported_twice": len(reported) - len(rep),
        "lost": len(rep - got),
        "lost_ids": sorted(rep - got)[:20],
        "duplicated_event_ids": len(ids) - len(set(ids)),
        "duplicated_tracklet_events": len(tracklet_events) - len(got),
        "orphan_tracklet_events": len(got - rep),
        "matches_without_tracklet_event": sum(m["query"]["tracklet_id"] not in got for m in matches),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the daemon runs before SIGTERM")
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("soak-out"), help="working folder (scene, logs, results)")
    ap.add_argument("--vehicles", type=int, default=6, help="vehicles in the scene (each pass of the loop shows them again)")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    args = ap.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))
    import psutil
    import yaml

    from reidd.synth.scene import generate_scene

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scene = generate_scene(out / "scene", cameras=args.cameras, vehicles=args.vehicles, seed=args.seed,
                           progress=False)
    scene_s = scene.num_frames / scene.fps
    copies = math.ceil(args.minutes * 60 / scene_s)  # passes over each file within the run (SIGTERM ends it)
    cfg = yaml.safe_load(Path(scene.config).read_text())
    for cam in cfg["cameras"]:
        cam["url"] = str(Path(scene.videos[cam["id"]]).resolve())
        cam["loop"] = True
    redis_proc, redis_url = start_redis(out / "redis")
    port = free_port()
    cfg["gallery"] = {**cfg.get("gallery", {}), "redis_url": redis_url, "state_dir": str(out / "state")}
    cfg["events"] = {**cfg.get("events", {}), "spool_dir": str(out / "spool")}
    cfg["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    cfg_path = out / "soak.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    stream = (cfg.get("events") or {}).get("stream", "reidd:events")
    print(f"scene: {args.cameras} cameras, {args.vehicles} vehicles, {scene_s:.1f} s looped (about {copies} passes "
          f"per camera at {scene.fps:g} fps); run {args.minutes:g} min; "
          f"{os.cpu_count()} CPU cores", flush=True)

    log_path = out / "daemon.log"
    base = f"http://127.0.0.1:{port}"
    rows: list[dict] = []
    with log_path.open("w") as log_fh:
        daemon = subprocess.Popen([sys.executable, "-m", "reidd", "run", "--config", str(cfg_path)], cwd=ROOT,
                                  stdout=log_fh, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        proc = psutil.Process(daemon.pid)
        try:
            t_start = time.monotonic()
            while time.monotonic() - t_start < 180:  # model load, Redis, first frames
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {daemon.returncode} before it was ready; "
                                       f"see {log_path}")
                try:
                    if get(base + "/readyz")[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            else:
                raise RuntimeError(f"the daemon was not ready within 180 s; see {log_path}")
            ready_s = time.monotonic() - t_start
            print(f"ready after {ready_s:.1f} s (pid {daemon.pid})", flush=True)
            print(f"{'t_s':>6}{'rss_mb':>9}{'threads':>9}{'fds':>6}{'frames':>9}{'dropped':>9}{'queue':>7}"
                  f"{'gallery':>9}{'pending':>9}{'published':>11}", flush=True)
            t0 = time.monotonic()
            next_at = t0
            while True:
                now = time.monotonic()
                if daemon.poll() is not None:
                    break
                if now >= next_at:
                    row = {"t_s": round(now - t0, 1), **sample(proc), **scrape(base + "/metrics")}
                    rows.append(row)
                    print(f"{row['t_s']:6.0f}{row['rss_mb']:9.1f}{row['threads']:9d}{row['fds']:6d}"
                          f"{row.get('frames', 0):9.0f}{row.get('dropped', 0):9.0f}{row.get('queue', 0):7.0f}"
                          f"{row.get('gallery', 0):9.0f}{row.get('pending', 0):9.0f}{row.get('published', 0):11.0f}",
                          flush=True)
                    next_at += args.interval
                if now - t0 >= args.minutes * 60:
                    break
                time.sleep(min(0.2, max(0.0, next_at - time.monotonic())))
            ended_early = daemon.poll() is not None
            last = scrape(base + "/metrics")
            drain_t = time.monotonic()
            if not ended_early:
                daemon.send_signal(signal.SIGTERM)
            rc = daemon.wait(timeout=180)
            drain_s = time.monotonic() - drain_t
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    text = log_path.read_text(errors="replace")
    reported = re.findall(r"reidd\.daemon: tracklet (\S+) ", text)
    summary_tracklets = 0  # the per-camera table the daemon prints when it exits: camera state frames tracklets
    for cam in cfg["cameras"]:
        m = re.search(rf"^{re.escape(cam['id'])}\s+\S+\s+\d+\s+(\d+)", text, re.M)
        summary_tracklets += int(m.group(1)) if m else 0
    try:
        ev = stream_check(redis_url, stream, reported)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
    if not rows:
        print("no sample taken", file=sys.stderr)
        return 1
    rss = [r["rss_mb"] for r in rows]
    thr = [r["threads"] for r in rows]
    fds = [r["fds"] for r in rows]
    # growth over the steady part (after the first third: caches, gallery and allocator warm-up)
    k = len(rows) // 3
    span_min = (rows[-1]["t_s"] - rows[k]["t_s"]) / 60
    growth = (rss[-1] - rss[k]) / span_min if span_min > 0 else 0.0
    errors = len(re.findall(r" (ERROR|CRITICAL) ", text))
    result = {
        "bench": "soak", "minutes": args.minutes, "cameras": args.cameras, "vehicles": args.vehicles,
        "passes": copies, "samples": len(rows), "ready_s": round(ready_s, 1), "exit_code": rc,
        "ended_before_sigterm": ended_early, "drain_s": round(drain_s, 1),
        "rss_mb": {"start": round(rss[0], 1), "end": round(rss[-1], 1), "peak": round(max(rss), 1),
                   "growth_mb_per_min_after_first_third": round(growth, 2)},
        "threads": {"start": thr[0], "end": thr[-1], "max": max(thr)},
        "fds": {"start": fds[0], "end": fds[-1], "max": max(fds)},
        "frames_processed": last.get("frames"), "frames_dropped": last.get("dropped"),
        "summary_tracklets": summary_tracklets, "log_errors": errors, **ev,
    }
    (out / "soak.json").write_text(json.dumps({**result, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print()
    print(f"{'':<10}{'start':>10}{'end':>10}{'peak':>10}")
    print(f"{'rss MB':<10}{rss[0]:10.1f}{rss[-1]:10.1f}{max(rss):10.1f}   "
          f"growth {growth:+.2f} MB/min after the first third")
    print(f"{'threads':<10}{thr[0]:10d}{thr[-1]:10d}{max(thr):10d}")
    print(f"{'fds':<10}{fds[0]:10d}{fds[-1]:10d}{max(fds):10d}")
    print(f"frames processed {last.get('frames', 0):.0f}, dropped {last.get('dropped', 0):.0f}; exit code {rc} "
          f"after a {drain_s:.1f} s drain; {errors} ERROR lines in {log_path}")
    print(f"tracklets reported {ev['tracklets_reported']} (summary table {summary_tracklets}); events {ev['events']} "
          f"({ev['tracklet_events']} tracklet, {ev['match_events']} match); lost {ev['lost']}, duplicated event ids "
          f"{ev['duplicated_event_ids']}, duplicated tracklet events {ev['duplicated_tracklet_events']}, orphans "
          f"{ev['orphan_tracklet_events']}, matches without tracklet event {ev['matches_without_tracklet_event']}")
    print(json.dumps(result))
    ok = rc == 0 and ev["lost"] == 0 and ev["duplicated_event_ids"] == 0 and ev["duplicated_tracklet_events"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
