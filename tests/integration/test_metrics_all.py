"""Every metric reidd declares is set during a real run, and the newly exported values are the real ones.

* the reader's queue depth on a real decoded video;
* a real replay with re-ID (embedder forward passes, a real redis-server, events) served by the
  daemon's own ``/metrics`` endpoint: every family declared on :class:`reidd.telemetry.Metrics`
  (found by introspection, so a metric declared later and never set fails here) has a sample, and
  a non-zero one unless it is listed in ``MAY_STAY_ZERO`` with the reason;
* the gallery's ``stats`` and the matcher's backlog (a real Redis outage) as scraped over HTTP."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reidd.config import CameraConfig, GalleryConfig, MatchingConfig, TopologyLink, load_config
from reidd.context import Clock
from reidd.daemon import run_replay
from reidd.sources import CameraReader, SourceEnd
from reidd.telemetry import GALLERY_CHANGES, Metrics, MetricsServer
from reidd.types import BoxRecord, Frame, Tracklet, TrackletEmbedding

from support import RedisProc, free_port


#: Families a healthy replay of recorded files legitimately leaves at zero (they must still have a sample).
MAY_STAY_ZERO = {
    "reidd_frames_dropped": "replay never drops a frame (the reader waits)",
    "reidd_source_reconnects": "files do not reconnect",
    "reidd_tracklets_dropped": "whether a too-short track occurs depends on the scene",
    "reidd_events_refused": "the spool is never full while Redis is up",
    "reidd_event_publish_failures": "Redis is up",
    "reidd_event_spool_depth": "Redis is up: nothing is spooled",
    "reidd_gallery_backlog_entries": "Redis is up (covered by the outage test below)",
    "reidd_gallery_backlog_dropped": "Redis is up (covered by the outage test below)",
    "reidd_fragments_joined": "whether a track breaks depends on the scene (covered below)",
    "reidd_embedder_failures": "embedding does not fail (failures: tests/integration/test_embedding_failure.py)",
    "reidd_gallery_data_loss": "Redis keeps its data (losses: tests/integration/test_global_ids.py)",
}


@pytest.fixture(scope="module")
def scene2(tmp_path_factory: pytest.TempPathFactory):
    from reidd.synth.scene import generate_scene

    return generate_scene(tmp_path_factory.mktemp("scene2"), cameras=2, vehicles=4, seed=3, progress=False)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return r.read().decode()


def _samples(text: str) -> dict[str, list]:
    """family name -> its samples (without the ``_created`` timestamps, which every counter has)."""
    return {fam.name: [s for s in fam.samples if not s.name.endswith("_created")]
            for fam in text_string_to_metric_families(text)}


def _nonzero(samples: list) -> bool:
    """A counter's total, a gauge's value or a histogram's count is non-zero somewhere."""
    return any(s.value != 0 for s in samples
               if not s.name.endswith(("_bucket", "_sum")) and not np.isnan(s.value))


def _value(samples: dict[str, list], family: str, **labels: str) -> float:
    return sum(s.value for s in samples[family]
               if s.name in (family, family + "_total") and all(s.labels.get(k) == v for k, v in labels.items()))


# --------------------------------------------------------------------------- reader queue depth
def test_reader_queue_depth_counts_the_frames_waiting(scene2) -> None:
    cam = CameraConfig(id="c001", url=str(scene2.videos["c001"]), queue_size=3)
    reader = CameraReader(cam, replay=True)
    assert reader.queue_depth == 0
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while reader.queue_depth < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.queue_depth == 3
        time.sleep(0.3)
        assert reader.queue_depth == 3  # replay: the reader waits on a full queue, never more
        assert isinstance(reader.get(timeout=5), Frame)
        assert reader.queue_depth in (2, 3)  # one taken (the reader may already have refilled it)
        for _ in range(scene2.num_frames - 1):
            assert isinstance(reader.get(timeout=10), Frame)
        deadline = time.monotonic() + 10
        while reader.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not reader.alive
        assert reader.queue_depth == 0  # only the SourceEnd is left: it is not a frame waiting
        end = reader.get(timeout=1)
        assert isinstance(end, SourceEnd) and end.error is None
        assert reader.queue_depth == 0
    finally:
        reader.stop()


# --------------------------------------------------------------------------- every declared metric
def _reid_config(scene, tmp_path: Path, port: int) -> Path:
    data = yaml.safe_load(Path(scene.config).read_text())
    data["reid"] = {"input_size": [128, 128], "max_batch": 32}
    data["tracklets"] = {"max_crops": 4}
    data["metrics"] = {"enabled": True, "host": "127.0.0.1", "port": port}
    # decisions wait the whole transit window, so that tracklets are seen pending (reidd_matcher_pending_tracklets)
    # by the scrapes: with early decisions a tracklet of this short replay is pending for a few milliseconds only
    data["matching"] = {**(data.get("matching") or {}), "early": False}
    path = Path(scene.out_dir) / f"metrics-{tmp_path.name}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_every_declared_metric_is_set_by_a_replay_with_reid(scene2, tmp_path: Path, redis_proc: RedisProc,
                                                            one_torch_thread) -> None:
    import torch

    port = free_port()
    cfg = load_config(_reid_config(scene2, tmp_path, port))
    metrics = Metrics()
    scrapes: list[str] = []
    done = threading.Event()

    def scrape_while_running() -> None:  # the daemon's own endpoint (`reidd replay --metrics`)
        while not done.is_set():
            try:
                scrapes.append(_get(f"http://127.0.0.1:{port}/metrics"))
            except OSError:  # not listening yet, or already stopped
                pass
            done.wait(0.05)

    t = threading.Thread(target=scrape_while_running, daemon=True)
    t.start()
    try:
        code, result = run_replay(cfg, tmp_path / "o", metrics=metrics, serve_metrics=True,
                                  redis_url=redis_proc.url, save_crops=False)
    finally:
        done.set()
        t.join(10)
    assert code == 0
    assert len(scrapes) >= 3, "the replay's /metrics endpoint was not reachable while it ran"
    server = MetricsServer(metrics, "127.0.0.1", 0).start()  # the same registry, after the run
    try:
        final_text = _get(server.url)
    finally:
        server.stop()
    runs = [_samples(text) for text in scrapes]
    final = _samples(final_text)

    declared = Metrics().declared()
    assert len(declared) >= 30 and {"reidd_queue_depth", "reidd_gallery_changes", "reidd_gpu_memory_bytes",
                                    "reidd_gallery_backlog_dropped"} <= set(declared)
    may_stay_zero = dict(MAY_STAY_ZERO)
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        may_stay_zero["reidd_gpu_memory_bytes"] = "no CUDA in use: torch allocates nothing on a GPU"
    assert set(may_stay_zero) <= set(declared), "MAY_STAY_ZERO names a metric that no longer exists"
    for name in declared:
        assert final.get(name), f"{name} is declared but has no sample after a run"
        if name not in may_stay_zero:
            assert any(_nonzero(s.get(name, [])) for s in [*runs, final]), (
                f"{name} is declared but was never set to anything during a replay with re-ID "
                "(wire it, remove it, or add it to MAY_STAY_ZERO with the reason)")
    # nothing exposed under reidd_ that Metrics does not declare
    assert {n for n in final if n.startswith("reidd_") and not n.endswith("_created")} <= set(declared)

    # the queue depth is real: frames were waiting while the replay ran, never more than the queue holds
    cams = [c.id for c in cfg.enabled_cameras]
    depths = [s.value for r in runs for s in r.get("reidd_queue_depth", [])]
    assert max(depths) > 0 and max(depths) <= max(c.queue_size for c in cfg.enabled_cameras)
    assert {s.labels["camera"] for s in final["reidd_queue_depth"]} == set(cams)
    # the per-camera series exist from the start, at 0 where nothing happened
    for cam in cams:
        assert _value(final, "reidd_frames_dropped", camera=cam) == 0
        assert _value(final, "reidd_frames_processed", camera=cam) == result.cameras[cam].frames
    # the gallery's stats as exported: every tracklet decided entered the gallery, nothing left pending
    n_tracklets = sum(c.tracklets for c in result.cameras.values())
    assert {s.labels["change"] for s in final["reidd_gallery_changes"]} == set(GALLERY_CHANGES)
    assert _value(final, "reidd_gallery_changes", change="added") == _value(final, "reidd_gallery_entries") > 0
    assert _value(final, "reidd_gallery_changes", change="added") <= n_tracklets
    assert _value(final, "reidd_gallery_changes", change="evicted") == 0
    assert _value(final, "reidd_matcher_pending_tracklets") == 0
    assert max(_value(r, "reidd_matcher_pending_tracklets") for r in runs if "reidd_matcher_pending_tracklets" in r) > 0
    assert _value(final, "reidd_gallery_backlog_entries") == 0


# --------------------------------------------------------------------------- gallery stats + backlog, outage
DIM = 32


TOPO = [TopologyLink(src="c1", dst="c2", min_s=2, max_s=15, bidirectional=False)]


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _tracklet(cam: str, lid: int, t0: float, x0: float, vx: float, segment: int = 0, n: int = 20) -> Tracklet:
    boxes = [BoxRecord(int(t0 * 10) + k, t0 + k / 10, (x0 + vx * k / 10, 100.0, x0 + vx * k / 10 + 60, 150.0),
                       0.9, 2) for k in range(n)]
    return Tracklet(cam, lid, segment, boxes, [], "lost", 2)


def test_gallery_stats_and_matcher_backlog_are_exported(tmp_path: Path, redis_proc: RedisProc) -> None:
    from reidd.gallery.store import Gallery
    from reidd.match.matcher import Matcher

    rng = np.random.default_rng(3)
    clock = Clock(wall=False)
    client = redis.Redis.from_url(redis_proc.url, socket_timeout=1, socket_connect_timeout=1)
    gallery = Gallery(client, DIM, GalleryConfig(max_entries=3), clock=clock, daemon_id="t")
    matcher = Matcher(MatchingConfig(topology=TOPO), gallery, max_track_memory=2)
    metrics = Metrics()
    metrics.watch_reid(matcher)
    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    try:
        vecs = [_unit(rng.normal(size=DIM)) for _ in range(5)]
        for i, v in enumerate(vecs[:4]):
            matcher.submit(TrackletEmbedding(_tracklet("c1", i + 1, i * 0.5, 100.0 + 150 * i, 0.0), v, 8))
        # a broken track: piece 2 starts 1 s after piece 1 was lost, where it was heading, looking alike
        matcher.submit(TrackletEmbedding(_tracklet("c1", 9, 20.0, 100.0, 100.0), vecs[4], 8))
        matcher.submit(TrackletEmbedding(_tracklet("c1", 10, 22.9, 390.0, 100.0), vecs[4], 8))
        s = _samples(_get(server.url))
        assert _value(s, "reidd_matcher_pending_tracklets") == matcher.pending_count == 6
        assert _value(s, "reidd_fragments_joined") == matcher.fragments_joined == 1
        clock.advance(60.0)
        assert len(matcher.decide(60.0)) == 6
        s = _samples(_get(server.url))
        assert _value(s, "reidd_gallery_changes", change="added") == gallery.stats["added"] == 6
        assert _value(s, "reidd_gallery_changes", change="evicted") == gallery.stats["evicted"] == 3  # max 3
        assert len(gallery) == 3
        assert _value(s, "reidd_matcher_pending_tracklets") == 0

        # Redis goes away: later pieces of known tracks are decided (their ids are known) but cannot be
        # written; the backlog holds max_track_memory = 2 of them, the third one drops the oldest
        redis_proc.stop()
        for lid, seg in ((9, 1), (10, 1), (10, 2)):
            matcher.submit(TrackletEmbedding(_tracklet("c1", lid, 55.0 + seg, 500.0, 0.0, segment=seg), vecs[4], 8))
        clock.advance(62.0)
        assert len(matcher.decide(62.0)) == 3
        s = _samples(_get(server.url))
        assert _value(s, "reidd_gallery_backlog_entries") == matcher.unsaved_count == 2
        assert _value(s, "reidd_gallery_backlog_dropped") == matcher.unsaved_dropped == 1
        assert _value(s, "reidd_gallery_changes", change="added") == 6

        redis_proc.start()  # back: the backlog is written on the next decision round
        matcher.decide(63.0)
        s = _samples(_get(server.url))
        assert _value(s, "reidd_gallery_backlog_entries") == matcher.unsaved_count == 0
        assert _value(s, "reidd_gallery_backlog_dropped") == 1  # a counter: it stays
        assert _value(s, "reidd_gallery_changes", change="added") == gallery.stats["added"] == 8
    finally:
        server.stop()
        gallery.close()
        client.close()
