"""The live daemon pipeline with a real RTSP camera that dies and comes back, next to a file camera."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import yaml

from reidd.config import load_config
from reidd.context import RunContext
from reidd.pipeline import Pipeline
from reidd.telemetry import Metrics

from support import free_port, wait_until
from support.media import RtspServers, needs_gst


@needs_gst
def test_rtsp_camera_dies_and_returns_while_the_other_camera_keeps_going(scene3, tmp_path: Path) -> None:
    port = free_port()
    servers = RtspServers(tmp_path)
    try:
        server = servers.start(Path(scene3.videos["c001"]), port)
        cfg_path = tmp_path / "live.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "cameras": [
                {"id": "street", "url": f"rtsp://127.0.0.1:{port}/cam", "open_timeout_s": 3, "read_timeout_s": 2,
                 "reconnect": {"initial_s": 0.2, "multiplier": 1.5, "max_s": 1.0, "jitter": 0.1}},
                {"id": "file", "url": str(scene3.videos["c002"])},
            ],
            "detector": {"type": "motion"},
            "reid": {"enabled": False}, "metrics": {"enabled": False},
        }))
        metrics = Metrics()
        pipe = Pipeline(load_config(cfg_path), RunContext.for_live(), metrics=metrics)
        runner = threading.Thread(target=pipe.run)
        runner.start()
        samples: list[tuple[float, int, int]] = []  # (time, street frames, file frames)
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                samples.append((time.time(), pipe.summary["street"].frames, pipe.summary["file"].frames))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            wait_until(lambda: pipe.summary["street"].frames >= 20, 30, "RTSP frames")
            server.kill()
            server.wait(5)
            killed_at = time.time()
            wait_until(lambda: pipe.summary["street"].state == "reconnecting", 15, "state reconnecting")
            time.sleep(2.0)
            frames_during_outage = pipe.summary["street"].frames
            servers.start(Path(scene3.videos["c001"]), port)
            wait_until(lambda: pipe.summary["street"].frames > frames_during_outage + 10, 30, "RTSP frames again")
            assert pipe.summary["street"].state == "streaming"
            back_at = time.time()
        finally:
            sampling.set()
            sampler.join()
            pipe.stop()
            runner.join(30)
        assert not runner.is_alive()
        # the file camera kept producing frames through the whole outage (no stall longer than 1.5 s)
        window = [(t, f) for t, _, f in samples if killed_at - 1 <= t <= back_at]
        assert window[-1][1] > window[0][1] + 10
        stalls = []
        last_t, last_f = window[0]
        for t, f in window[1:]:
            if f > last_f:
                stalls.append(t - last_t)
                last_t, last_f = t, f
        assert max(stalls) < 1.5, max(stalls)
        reconnects = sum(s.value for fam in metrics.source_reconnects.collect() for s in fam.samples
                         if s.name.endswith("_total") and s.labels.get("camera") == "street")
        assert reconnects >= 1
    finally:
        servers.close()
