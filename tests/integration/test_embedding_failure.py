"""A live embedding batch that fails loses no event: its tracklets get new ids (unmatched, saying why), the failure
is counted and /readyz reports the re-ID side degraded. A real embedder (EfficientNet-Lite0 forward passes) made to
fail once, a real redis-server, the live re-ID stage with its batching thread."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from reidd.config import load_config
from reidd.context import RunContext
from reidd.telemetry import Metrics
from reidd.types import BoxRecord, Crop, Tracklet

from support import RedisProc, polled


def _tracklet(cam: str, lid: int, t0: float, rng: np.random.Generator) -> Tracklet:
    img = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    boxes = [BoxRecord(int(t0 * 10) + k, t0 + k / 10, (10.0 + k, 10.0, 90.0 + k, 58.0), 0.9, 2) for k in range(12)]
    crops = [Crop(k, t0 + k / 10, (10, 10, 90, 58), img, quality=0.9) for k in range(2)]
    return Tracklet(cam, lid, 0, boxes, crops, "lost", 2)


def test_a_failed_live_embedding_loses_no_event_and_is_reported(tmp_path: Path) -> None:
    from reidd.runtime import ReidRuntime

    srv = RedisProc(tmp_path / "redis").start()
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(
        "cameras:\n  - id: c1\n    url: cam.mp4\ndetector: {type: motion}\n"
        "reid: {input_size: [64, 64], runtime: torch}\n"
        f"gallery: {{redis_url: '{srv.url}'}}\n"
        f"events: {{spool_dir: '{tmp_path / 'spool'}'}}\n"
        "metrics: {enabled: false}\n", encoding="utf-8")
    events = tmp_path / "events.jsonl"
    metrics = Metrics()
    runtime = ReidRuntime(load_config(cfg, check_files=False), RunContext.for_live(), metrics=metrics,
                          events_jsonl=events)
    real = runtime.embedder.embed_tracklets
    calls = {"n": 0}

    def fails_once(tracklets):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(tracklets)

    runtime.embedder.embed_tracklets = fails_once
    rng = np.random.default_rng(0)
    stage = runtime.stage
    try:
        stage([_tracklet("c1", 1, 0.0, rng), _tracklet("c1", 2, 0.5, rng)])
        assert stage._batcher.drain(30)
        stage([_tracklet("c1", 3, 1.0, rng)])
        assert stage._batcher.drain(60)
        assert polled(lambda: (stage.tick(None), stage.tracklets == 3)[1], timeout=30)
        ok, detail = runtime.ready()
        assert ok and detail["embedding"]["state"] == "degraded", detail
        assert "CUDA error" in detail["embedding"]["reason"] and detail["embedding"]["failures"] == 1
        assert "reidd_embedder_failures_total 1.0" in metrics.render().decode()
        runtime.finish()
    finally:
        runtime.close()
        srv.stop()
    got = {e["tracklet_id"]: e for e in map(json.loads, events.read_text().splitlines()) if e["type"] == "tracklet"}
    assert sorted(got) == ["c1:1:0", "c1:2:0", "c1:3:0"]  # nothing lost
    for tid in ("c1:1:0", "c1:2:0"):
        assert got[tid]["association"]["reason"].startswith("embedding failed (RuntimeError: CUDA error")
    assert not got["c1:3:0"]["association"]["reason"].startswith("embedding failed")  # the next batch embeds
    assert len({e["global_id"] for e in got.values()}) == 3
    # every event says when its id was decided, never before the tracklet ended
    assert all(e["association"]["decided_ts"] >= e["last_ts"] for e in got.values())
