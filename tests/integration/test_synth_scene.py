"""Generated scenes (reidd.synth) end to end: ground truth, pixels, the scene's config, tracking by reidd's
motion detector and ByteTrack, real-crop compositing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidd.config import load_config
from reidd.synth import Scene, generate_scene

from support import ASSETS, ROOT
from support.media import count_frames


VN2CAM = ASSETS / "reid" / "vn-2cam"


@pytest.fixture(scope="module")
def scene3(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """A 3-camera scene with enough identities for full and partial routes."""
    return generate_scene(tmp_path_factory.mktemp("s3"), cameras=3, vehicles=8, fps=10.0, size=(320, 180), seed=5,
                          progress=False)


def _mot(path: Path) -> dict[int, list[tuple[int, int, int, int, int]]]:
    """frame -> [(id, x, y, w, h)] of a MOTChallenge gt file."""
    out: dict[int, list[tuple[int, int, int, int, int]]] = {}
    for line in path.read_text().splitlines():
        f, o, x, y, w, h, conf, *rest = line.split(",")
        assert conf == "1" and rest == ["-1", "-1", "-1"]
        out.setdefault(int(f), []).append((int(o), int(x), int(y), int(w), int(h)))
    return out


def _partial_frames(meta: dict, cam: str) -> set[int]:
    """Frames of a camera where some vehicle is drawn but is not (yet / any more) in the ground truth."""
    out: set[int] = set()
    for ident in meta["identities"]:
        for a in ident["appearances"]:
            if a["camera"] == cam:
                out |= set(range(a["enter_frame"], a["first_gt_frame"])) | set(
                    range(a["last_gt_frame"] + 1, a["exit_frame"] + 1))
    return out


def test_ground_truth_is_consistent(scene3: Scene) -> None:
    meta = json.loads(scene3.meta.read_text())
    width, height = scene3.size
    fps = scene3.fps
    lo, hi = meta["params"]["transit_s"]
    n_ids = meta["params"]["vehicles"]
    assert scene3.camera_ids == ["c001", "c002", "c003"]

    # Every video decodes with the same frame count; all GT frames lie within it.
    counts = {c: len(count_frames(p)) for c, p in scene3.videos.items()}
    assert set(counts.values()) == {meta["num_frames"]}
    mot = {c: _mot(scene3.gt_mot[c]) for c in scene3.camera_ids}

    # MTMC file == union of the per-camera MOT files.
    mtmc = set()
    for line in scene3.gt_mtmc.read_text().splitlines():
        cam, o, f, x, y, w, h, wx, wy = line.split(" ")
        assert (wx, wy) == ("-1", "-1")
        mtmc.add((cam, int(o), int(f), int(x), int(y), int(w), int(h)))
    from_mot = {(c, o, f, x, y, w, h) for c in mot for f, boxes in mot[c].items() for o, x, y, w, h in boxes}
    assert mtmc == from_mot and len(mtmc) > 100

    for cam, frames in mot.items():
        assert frames == dict(sorted(frames.items()))
        for f, boxes in frames.items():
            assert 1 <= f <= counts[cam]
            assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)
            for o, x, y, w, h in boxes:
                assert 1 <= o <= n_ids
                assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= width and y + h <= height
            # trackable: no two boxes of one frame overlap
            for i, (_, x1, y1, w1, h1) in enumerate(boxes):
                for _, x2, y2, w2, h2 in boxes[i + 1:]:
                    assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1

    cam_index = {c: i for i, c in enumerate(scene3.camera_ids)}
    multi = 0
    for ident in meta["identities"]:
        o = ident["obj_id"]
        apps = ident["appearances"]
        idx = [cam_index[a["camera"]] for a in apps]
        assert idx == list(range(idx[0], idx[0] + len(idx))), f"route of {o} is not consecutive: {idx}"
        assert [a["camera"] for a in apps] == ident["route"]
        multi += len(apps) > 1
        for a in apps:
            gt_frames = sorted(f for f, boxes in mot[a["camera"]].items() if any(b[0] == o for b in boxes))
            # one contiguous pass per camera, inside the frames where the vehicle is drawn
            assert gt_frames == list(range(a["first_gt_frame"], a["last_gt_frame"] + 1))
            assert a["enter_frame"] <= a["first_gt_frame"] <= a["last_gt_frame"] <= a["exit_frame"]
            for f in gt_frames:
                (box,) = [b for b in mot[a["camera"]][f] if b[0] == o]
                assert box[3] * box[4] >= 0.6 * a["box_w"] * a["box_h"] - 1
        for prev, nxt in zip(apps, apps[1:]):
            assert lo <= nxt["transit_s"] <= hi
            gap_s = (nxt["enter_frame"] - prev["exit_frame"]) / fps
            assert lo <= gap_s <= hi + 2 / fps + 1e-9, (o, gap_s)
    assert multi >= n_ids // 2  # most identities pass several cameras: global ids shared across cameras
    seen = {(c, o) for c, o, *_ in mtmc}
    assert {o for _, o in seen} == set(range(1, n_ids + 1))


def test_vehicles_are_in_the_pixels_and_nothing_else_moves(scene3: Scene) -> None:
    meta = json.loads(scene3.meta.read_text())
    for cam_meta in meta["cameras"][:2]:
        cam = cam_meta["id"]
        bg = cv2.imread(str(scene3.out_dir / cam_meta["background"]))
        # outside the boxes compare luma only: the codec's 4:2:0 chroma blurs the thin coloured road markings
        bg_luma = cv2.cvtColor(bg, cv2.COLOR_BGR2GRAY).astype(np.int16)
        bg = bg.astype(np.int16)
        mot = _mot(scene3.gt_mot[cam])
        partial = _partial_frames(meta, cam)
        checked_boxes = checked_frames = 0
        for f, img in enumerate(count_frames(scene3.videos[cam]), start=1):
            colour_diff = np.abs(img.astype(np.int16) - bg).max(axis=2)
            for _, x, y, w, h in mot.get(f, []):
                assert colour_diff[y:y + h, x:x + w].mean() > 15.0, (cam, f)
                checked_boxes += 1
            if f in partial:
                continue
            diff = np.abs(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.int16) - bg_luma)
            outside = np.ones(diff.shape, bool)
            for _, x, y, w, h in mot.get(f, []):
                outside[max(0, y - 2):y + h + 2, max(0, x - 2):x + w + 2] = False
            assert diff[outside].mean() < 4.0, (cam, f)
            assert np.mean(diff[outside] > 25) < 0.002 and diff[outside].max() < 45, (cam, f)
            checked_frames += 1
        assert checked_boxes > 50 and checked_frames > 50


def test_config_loads_and_covers_the_transits(scene3: Scene) -> None:
    cfg = load_config(scene3.config)
    assert [c.id for c in cfg.cameras] == scene3.camera_ids
    assert [Path(c.url) for c in cfg.cameras] == [scene3.videos[c].resolve() for c in scene3.camera_ids]
    assert cfg.detector.type == "motion" and cfg.tracker.type == "bytetrack"
    width, height = scene3.size
    for cam in cfg.cameras:  # the ROI covers the frame but for narrow bands at the left and right borders
        assert cam.roi is not None
        xs, ys = [p[0] for p in cam.roi], [p[1] for p in cam.roi]
        assert 0 < min(xs) < 0.1 * width and 0.9 * width < max(xs) < width and (min(ys), max(ys)) == (0, height)
    assert Path(cfg.gallery.state_dir).is_relative_to(scene3.out_dir.resolve())
    assert Path(cfg.events.spool_dir).is_relative_to(scene3.out_dir.resolve())
    links = {(link.src, link.dst): link for link in cfg.matching.topology}
    assert set(links) == {("c001", "c002"), ("c002", "c003")}
    meta = json.loads(scene3.meta.read_text())
    for ident in meta["identities"]:
        for prev, nxt in zip(ident["appearances"], ident["appearances"][1:]):
            link = links[prev["camera"], nxt["camera"]]
            last_to_first = (nxt["first_gt_frame"] - prev["last_gt_frame"]) / scene3.fps
            first_to_first = (nxt["first_gt_frame"] - prev["first_gt_frame"]) / scene3.fps
            assert link.min_s <= last_to_first and first_to_first <= link.max_s


def test_scene_is_trackable_by_reidd_motion_detector_and_bytetrack(
    scene3: Scene, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The written config (motion detector, ROI, ByteTrack) tracks the scene well, per AI City MTMC scoring."""
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_AUTOINSTALL", "0")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))
    from reidd.detect import build_detector, filter_roi
    from reidd.evaluate.mtmc import evaluate_mtmc
    from reidd.track import CameraTracker
    from reidd.types import Frame

    cfg = load_config(scene3.config)
    detector = build_detector(cfg.detector)
    lines = []
    for k, cam in enumerate(cfg.cameras):
        tracker = CameraTracker(cfg.tracker)
        for i, img in enumerate(count_frames(Path(cam.url))):
            dets = filter_roi(detector.detect([Frame(cam.id, i, i / scene3.fps, img)])[0], cam.roi)
            tracks = tracker.update(dets, img)
            assert tracks.track_id is not None
            for tid, (x1, y1, x2, y2) in zip(tracks.track_id.tolist(), tracks.xyxy.tolist()):
                lines.append(f"{cam.id} {(k + 1) * 100000 + tid} {i + 1} {x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f}")
    pred = tmp_path / "pred.txt"
    pred.write_text("\n".join(lines) + "\n")
    res = evaluate_mtmc(scene3.gt_mtmc, pred)
    assert set(res["per_camera"]) == set(scene3.camera_ids)
    for cam, m in res["per_camera"].items():
        assert m["mota"] > 0.85 and m["idf1"] > 0.85, (cam, m)


@pytest.mark.skipif(not (VN2CAM / "manifest.csv").is_file(), reason="shared vn-2cam crops not present")
def test_real_crops_are_composited(tmp_path: Path) -> None:
    scene = generate_scene(tmp_path, cameras=3, vehicles=4, fps=10.0, size=(320, 180), seed=2, crops_dir=VN2CAM,
                           progress=False)
    assert scene.camera_ids == ["c001", "c002"]  # vn-2cam has two camids
    meta = json.loads(scene.meta.read_text())
    with (VN2CAM / "manifest.csv").open(newline="") as fh:
        rows = {str((VN2CAM / r["path"])): r for r in csv.DictReader(fh)}
    frames = {c: count_frames(scene.videos[c]) for c in scene.camera_ids}
    checked = 0
    for ident in meta["identities"]:
        assert ident["source"] == "crop"
        for a in ident["appearances"]:
            row = rows[a["crop"]]
            assert row["pid"] == ident["pid"] and int(row["camid"]) == int(a["camera"][1:])
            crop = cv2.imread(a["crop"])
            # a frame in the middle of the pass, where the whole box is visible
            f = (a["first_gt_frame"] + a["last_gt_frame"]) // 2
            (box,) = [b for b in _mot(scene.gt_mot[a["camera"]])[f] if b[0] == ident["obj_id"]]
            _, x, y, w, h = box
            assert (w, h) == (a["box_w"], a["box_h"])
            patch = frames[a["camera"]][f - 1][y:y + h, x:x + w].astype(np.float32)
            ref = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
            assert np.abs(patch.mean((0, 1)) - ref.mean((0, 1))).max() < 8.0
            assert np.abs(patch - ref).mean() < 14.0
            checked += 1
    assert checked >= 4
