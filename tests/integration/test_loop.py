"""``cameras[].loop``: a file camera read live plays again from the start at its end, its frame indices and media time
going on; a replay plays it once (with a warning); a stream URL cannot loop (check-config, exit 2)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from reidd.config import CameraConfig, load_config
from reidd.context import RunContext
from reidd.pipeline import Pipeline
from reidd.sources import CameraReader, SourceEnd, SourceState

from support import ROOT, wait_until
from support.media import read_code, write_video

N, FPS = 30, 30.0  # one pass: 1 s


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("loop") / "clip.mp4", N, FPS)


def reidd(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidd", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_live_file_camera_loops_with_indices_and_media_time_going_on(clip: Path) -> None:
    cam = CameraConfig(id="loop", url=str(clip), loop=True, queue_size=256)
    reader = CameraReader(cam, replay=False, speed=4.0)  # 4x real time: a pass every 0.25 s
    reader.start()
    frames = []
    try:
        deadline = time.monotonic() + 30
        while len(frames) < 2 * N + 10 and time.monotonic() < deadline:
            item = reader.get(timeout=1)
            assert not isinstance(item, SourceEnd), item
            if item is not None:
                frames.append(item)
        assert reader.state == SourceState.STREAMING and reader.alive
    finally:
        reader.stop()
    assert len(frames) == 2 * N + 10
    assert [f.index for f in frames] == list(range(2 * N + 10))  # nothing dropped, indices go on across passes
    assert [read_code(f.image) for f in frames] == [i % N for i in range(2 * N + 10)]  # the file, again and again
    assert [f.ts for f in frames] == pytest.approx([i / FPS for i in range(2 * N + 10)])  # media time goes on
    assert reader.passes >= 2 and reader.stats.frames_dropped == 0
    # paced across passes too: 70 frames at 4 x 30 fps take about 0.58 s, with no burst at the seam
    assert frames[-1].wall_time - frames[0].wall_time >= 0.45


def test_replay_plays_a_looping_file_once(clip: Path) -> None:
    reader = CameraReader(CameraConfig(id="loop", url=str(clip), loop=True), replay=True)
    reader.start()
    frames = []
    try:
        while True:
            item = reader.get(timeout=10)
            assert item is not None, "no SourceEnd"
            if isinstance(item, SourceEnd):
                break
            frames.append(item)
    finally:
        reader.stop()
    assert item.error is None and reader.state == SourceState.FINISHED
    assert [f.index for f in frames] == list(range(N))


def test_looping_camera_in_the_live_pipeline_gives_unique_tracklets_on_a_monotonic_clock(
        clip: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "cameras.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "cameras": [{"id": "demo", "url": str(clip), "loop": True}],
        "detector": {"type": "motion"}, "tracklets": {"lost_frames": 5, "min_boxes": 2},
        "reid": {"enabled": False}, "metrics": {"enabled": False},
    }))
    tracklets = []
    ticks: list[float] = []
    pipe = Pipeline(load_config(cfg_path), RunContext.for_live(), speed=3.0, sinks=[tracklets.extend],
                    on_tick=[lambda ts, _progress: ticks.append(ts)])
    runner = threading.Thread(target=pipe.run)
    runner.start()
    try:
        wait_until(lambda: pipe.readers["demo"].passes >= 3, 30, "three passes over the file")
    finally:
        pipe.stop()
        runner.join(30)
    assert not runner.is_alive()
    assert pipe.summary["demo"].state != "finished" and not pipe.summary["demo"].error
    ids = [t.tracklet_id for t in tracklets]
    assert len(ids) >= 3 and len(set(ids)) == len(ids), ids
    assert max(t.last_frame for t in tracklets) >= 2 * N  # tracks from a later pass, numbered after the first
    assert max(t.last_ts for t in tracklets) >= 2 * N / FPS
    assert all(t.first_ts <= t.last_ts for t in tracklets)
    assert ticks == sorted(ticks) and ticks[-1] >= 2 * N / FPS  # the stage clock never went back at a seam


def test_replay_cli_ignores_loop_with_a_warning_and_ends(clip: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(yaml.safe_dump({
        "cameras": [{"id": "demo", "url": str(clip), "loop": True}],
        "detector": {"type": "motion"}, "reid": {"enabled": False}, "metrics": {"enabled": False},
    }))
    res = reidd("replay", "--config", str(cfg), "--out", str(tmp_path / "out"), cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "cameras[0].loop is ignored by replay" in res.stderr
    assert f"{N} frames in" in res.stdout  # played once


def test_check_config_refuses_loop_on_a_stream(clip: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": [
        {"id": "file", "url": str(clip), "loop": True},
        {"id": "street", "url": "rtsp://cam.example/stream", "loop": True},
    ]}))
    res = reidd("check-config", str(cfg), cwd=ROOT)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("  ")]  # one line per problem
    assert len(lines) == 1 and lines[0].strip().startswith("cameras[1].loop: ") and "rtsp" in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    cfg.write_text(yaml.safe_dump({"cameras": [{"id": "file", "url": str(clip), "loop": True}]}))
    res = reidd("check-config", str(cfg), cwd=ROOT)
    assert res.returncode == 0, res.stderr
