"""A live pipeline slower than its camera: frames are dropped oldest first and counted, the overload is logged once
and /readyz says so; and reidd_frames_processed_total never runs ahead of reidd_frames_read_total at a scrape."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from reidd.config import load_config
from reidd.context import RunContext
from reidd.daemon import run_live
from reidd.detect import build_detector
from reidd.pipeline import Pipeline
from reidd.telemetry import Metrics
from reidd.types import Frame

from support import free_port
from support.media import read_code, write_video

FPS = 25.0
FRAMES = 200  # 8 s played live
DETECT_S = 0.25  # the slowed detector: about 4 frames/s against the camera's 25


class SlowDetector:
    """The real motion detector, made slower than the camera on purpose; records what it is given."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = f"slow-{inner.name}"
        self.seen: list[tuple[int, int, float]] = []  # (frame index, index drawn in the image, age when detected)

    def detect(self, frames: list[Frame]):
        now = time.time()
        self.seen += [(f.index, read_code(f.image), now - f.wall_time) for f in frames]
        time.sleep(DETECT_S)
        return self.inner.detect(frames)


def counters(text: str) -> dict[str, float]:
    """``reidd_frames_*_total{camera="cam"}`` of one scrape, by family name."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("reidd_frames_") and s.name.endswith("_total") and s.labels.get("camera") == "cam":
                out[s.name] = s.value
    return out


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def write_cfg(tmp_path: Path, video: Path, **extra) -> Path:
    path = tmp_path / "cameras.yaml"
    path.write_text(yaml.safe_dump({
        "cameras": [{"id": "cam", "url": str(video)}],
        "detector": {"type": "motion"},
        "reid": {"enabled": False},
        **extra,
    }))
    return path


def test_slow_pipeline_drops_oldest_frames_counts_them_logs_once_and_readyz_says_degraded(tmp_path, caplog,
                                                                                            monkeypatch):
    caplog.set_level(logging.INFO)
    video = write_video(tmp_path / "cam.mp4", FRAMES, FPS)
    port = free_port()
    cfg = load_config(write_cfg(tmp_path, video, metrics={"port": port}))
    detector = SlowDetector(build_detector(cfg.detector, ["cam"]))
    monkeypatch.setattr("reidd.pipeline.build_detector", lambda *_: detector)  # what `reidd run` builds
    metrics = Metrics()
    rc: list[int] = []
    runner = threading.Thread(target=lambda: rc.append(run_live(cfg, metrics=metrics)))
    runner.start()
    ready: list[tuple[int, dict]] = []
    scrapes: list[dict[str, float]] = []
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while runner.is_alive() and time.monotonic() < deadline:
        try:
            code, body = fetch(base + "/readyz")
            ready.append((code, json.loads(body)))
            scrapes.append(counters(fetch(base + "/metrics")[1].decode()))
        except (urllib.error.URLError, ConnectionError):
            pass  # not serving yet, or already stopped
        time.sleep(0.1)
    runner.join(30)
    assert not runner.is_alive() and rc == [0]

    # oldest frames dropped, the newest processed: indices rise with gaps, each image is its frame, and none is stale
    idx = [i for i, _, _ in detector.seen]
    assert idx == sorted(set(idx)), idx
    assert [code for _, code, _ in detector.seen] == idx
    assert len(idx) < FRAMES // 2 and max(b - a for a, b in zip(idx, idx[1:])) >= 3
    assert idx[-1] == FRAMES - 1  # the file's last frame was among the ones kept
    # kept frames are the newest: while the file plays, each is at most a queue of 4 frames and a batch or two behind
    # (keeping the oldest instead, they would wait 4 batches: 1 s); at its end the last queued frames drain
    ages = [age for i, _, age in detector.seen if i < FRAMES - 8]
    assert max(ages) < 0.7, ages

    # counted: every frame read was either processed or dropped
    final = counters(metrics.render().decode())
    read, processed = final["reidd_frames_read_total"], final["reidd_frames_processed_total"]
    dropped = final["reidd_frames_dropped_total"]
    assert read == FRAMES and processed == len(idx) and dropped == read - processed
    assert dropped > FRAMES // 2

    # logged once, when the camera started dropping
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "dropping" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "camera cam" in warnings[0].getMessage() and "slower than the cameras" in warnings[0].getMessage()
    assert any("frames dropped in this run" in r.getMessage() for r in caplog.records)

    # readiness: still ready, but degraded with the reason in words
    degraded = [d for code, d in ready if code == 200 and d.get("degraded")]
    assert degraded, ready
    d = degraded[-1]
    assert d["ready"] is True and d["cameras_streaming"] == ["cam"]
    assert d["frames_dropping"]["cam"]["dropped_percent"] > 50
    [reason] = d["degraded_reasons"]
    assert reason.startswith("camera cam dropping ") and reason.endswith(
        "% of frames: the pipeline is slower than the cameras")

    # at no scrape did processed run ahead of read
    scrapes = [s for s in scrapes if s]  # the series exist once the pipeline is built
    assert len(scrapes) >= 20 and all(
        s["reidd_frames_processed_total"] <= s["reidd_frames_read_total"] for s in scrapes)


def test_processed_never_exceeds_read_at_any_scrape(tmp_path):
    """Scrapes taken as fast as they come while a replay runs flat out (the pipeline exports the readers' counts
    only now and then, but counts processed frames one by one)."""
    video = write_video(tmp_path / "cam.mp4", 300, 30.0)
    cfg = load_config(write_cfg(tmp_path, video, metrics={"enabled": False}))
    metrics = Metrics()
    pipe = Pipeline(cfg, RunContext.for_replay(), metrics=metrics)
    done = threading.Event()
    scrapes: list[dict[str, float]] = []

    def scrape() -> None:
        while not done.is_set():
            scrapes.append(counters(metrics.render().decode()))

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        result = pipe.run()
    finally:
        done.set()
        scraper.join(10)
    assert result.frames == 300
    during = [s for s in scrapes if 0 < s["reidd_frames_processed_total"] < 300]
    assert len(during) >= 5, len(during)  # the scrapes did see the run in progress
    ahead = [s for s in scrapes if s["reidd_frames_processed_total"] > s["reidd_frames_read_total"]]
    assert not ahead, ahead[:3]
    final = counters(metrics.render().decode())
    assert final["reidd_frames_read_total"] == final["reidd_frames_processed_total"] == 300
