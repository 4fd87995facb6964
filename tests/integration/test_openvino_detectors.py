"""``detector.type: openvino`` with each of the four Open Model Zoo detectors in ../shared/assets/models/omz on a
real traffic clip: vehicles found, boxes inside the frame and of the classes reidd speaks, frames in flight
together give the boxes of one frame at a time, and the rider fusion makes one two-wheeler of a rider and bike."""

from __future__ import annotations

import numpy as np
import pytest

from reidd.config import DetectorConfig
from reidd.detect.base import build_detector
from reidd.detect.geometry import cover
from reidd.types import Frame

from support import ASSETS
from support.media import clip_frames

OMZ = ASSETS / "models" / "omz"
MODELS = ["person-vehicle-bike-detection-crossroad-1016", "person-vehicle-bike-detection-crossroad-0078",
          "vehicle-detection-0202", "person-vehicle-bike-detection-2004"]
CLIP = ASSETS / "video" / "ua-detrac-intersection.mp4"
needs_assets = pytest.mark.skipif(not OMZ.is_dir() or not CLIP.exists(), reason="needs ../shared/assets/models/omz")


def _frames(n: int = 60, every: int = 10, cameras: int = 3) -> list[Frame]:
    return clip_frames(CLIP, n, every, cameras)


def _xml(name: str):
    return OMZ / name / "FP16-INT8" / f"{name}.xml"


@needs_assets
@pytest.mark.parametrize("name", MODELS)
def test_shipped_model_on_a_real_clip(name: str) -> None:
    frames = _frames()
    det = build_detector(DetectorConfig(type="openvino", model=str(_xml(name))), ["c0", "c1", "c2"])
    batched = det.detect(frames)  # six frames (three cameras) in flight together
    alone = [det.detect([f])[0] for f in frames]
    cars = 0
    for f, d, one in zip(frames, batched, alone):
        h, w = f.image.shape[:2]
        assert (d.xyxy[:, :2] >= 0).all() and (d.xyxy[:, 2] <= w).all() and (d.xyxy[:, 3] <= h).all()
        assert (d.xyxy[:, 2] > d.xyxy[:, 0]).all() and (d.xyxy[:, 3] > d.xyxy[:, 1]).all()
        assert set(d.cls.tolist()) <= {0, 2, 3}  # car, motorcycle, lone riders (detector.riders)
        assert (d.conf >= 0.1).all()
        np.testing.assert_allclose(d.xyxy, one.xyxy, atol=1e-3)  # requests in flight keep their frames apart
        cars += int(((d.cls == 2) & (d.conf >= 0.5)).sum())
    assert cars >= 5 * len(frames), f"{name}: {cars} confident vehicles in {len(frames)} frames of a busy intersection"


@needs_assets
def test_classes_and_riders_on_the_benchmark_style_street() -> None:
    """Kept classes filter the model's labels (only cars asked for: no motorcycle, no rider), and with riders on,
    persons on two-wheelers are fused with them into one box. Checked against the same model's raw boxes (persons
    asked for explicitly, so nothing is fused): every two-wheeler a person overlaps ends up inside one fused box
    with a rider, and the persons overlapping two-wheelers mostly disappear into them. A person beside a bike that a
    more confident rider already claimed stays a lone rider by design, so that share is not asked to be 100 %: INT8
    results differ a little between CPUs (a CI machine left one such neighbour here, this one none)."""
    frames = _frames(every=6, cameras=1)
    name = "person-vehicle-bike-detection-crossroad-1016"
    only_cars = build_detector(DetectorConfig(type="openvino", model=str(_xml(name)), classes=[2]), ["c"])
    for d in only_cars.detect(frames):
        assert set(d.cls.tolist()) <= {2}
    raw = build_detector(DetectorConfig(type="openvino", model=str(_xml(name)), classes=[0, 2, 3]), ["c"])
    fused = build_detector(DetectorConfig(type="openvino", model=str(_xml(name))), ["c"])
    on_bikes = absorbed = 0
    for r, f in zip(raw.detect(frames), fused.detect(frames)):
        assert (f.cls == 0).sum() <= (r.cls == 0).sum()  # fusion only takes persons away
        persons, bikes, out = r.xyxy[r.cls == 0], r.xyxy[r.cls == 3], f.xyxy[f.cls == 3]
        if not len(persons) or not len(bikes):
            continue
        ridden = (cover(persons, bikes) >= 0.2) | (cover(bikes, persons).T >= 0.2)  # fuse_riders' own rule
        for j in np.nonzero(ridden.any(axis=0))[0]:
            holds = (cover(bikes[j : j + 1], out)[0] >= 0.999) & (cover(persons, out) >= 0.999).any(axis=0)
            assert holds.any(), f"a ridden two-wheeler {bikes[j]} is not inside any fused box with a rider"
        for i in np.nonzero(ridden.any(axis=1))[0]:
            on_bikes += 1
            absorbed += bool((cover(persons[i : i + 1], out) >= 0.999).any())
    assert on_bikes >= 10, f"only {on_bikes} persons on two-wheelers: the clip no longer tests fusion"
    assert absorbed >= 0.8 * on_bikes, f"{on_bikes - absorbed} of {on_bikes} riders left beside their bikes"


@needs_assets
def test_recommended_set_up_replays_a_top_down_road_deterministically(tmp_path) -> None:
    """The recommended CPU set-up (crossroad-1016 with motion_assist) through `reidd replay`'s own path on the
    top-down road clip, where YOLO11n finds almost nothing: stable tracks of the cars, the same boxes and ids on a
    second replay (requests in flight and the background model change nothing between runs), and no tracklet of
    moving blobs the model never saw."""
    import collections

    import yaml

    from reidd.config import load_config
    from reidd.daemon import run_replay

    clip = ASSETS / "video" / "intel-car-detection.mp4"
    cfg_path = tmp_path / "road.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "cameras": [{"id": "road", "url": str(clip)}],
        "detector": {"type": "openvino", "model": str(_xml(MODELS[0])), "motion_assist": True},
        "reid": {"enabled": False}, "metrics": {"enabled": False},
    }))
    cfg = load_config(cfg_path)
    assert cfg.tracker.new_track_thresh == 0.15  # follows the detector
    outs = []
    for run in ("a", "b"):
        code, result = run_replay(load_config(cfg_path), tmp_path / run)
        assert code == 0 and result.cameras["road"].frames == 377
        outs.append((tmp_path / run / "mot" / "road.txt").read_text())
    assert outs[0] == outs[1]
    assert result.cameras["road"].dropped_motion > 0  # this picture shakes: its edges move, motion alone carries them
    plain = load_config(cfg_path)
    plain.detector.motion_assist = False
    code, alone = run_replay(plain, tmp_path / "c")
    # what motion alone carried never became a tracklet: at most a vehicle or two more than the model alone
    assert code == 0 and alone.cameras["road"].tracklets <= result.cameras["road"].tracklets <= \
        alone.cameras["road"].tracklets + 2
    per_id: dict[int, int] = collections.Counter(int(line.split(",")[1]) for line in outs[0].splitlines())
    assert sum(n >= 40 for n in per_id.values()) >= 3, per_id  # measured: 3 cars followed for 44-48 frames
