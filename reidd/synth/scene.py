"""Synthetic multi-camera traffic scenes with ground truth.

``generate_scene`` draws one static background per camera, schedules every
identity along a route through the cameras in order (c001 -> c002 -> ...),
renders the videos with OpenCV ('mp4v' in .mp4, byte-identical on a rerun) and
writes the ground truth in AI City MTMC and MOTChallenge formats, a ready
``config.yaml`` for ``reidd replay`` and ``scene.json`` describing everything.

All cameras share one clock: frame ``f`` (1-based in the ground truth) of every
video is at ``(f - 1) / fps`` seconds, and every video has the same length.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from reidd.formats import mot, mtmc
from reidd.synth import render

log = logging.getLogger("reidd.synth")

_FOURCC = "mp4v"
_EXT = ".mp4"
_LEAD_IN_S = 1.0  # empty frames at the start (lets a background model settle)
_TAIL_S = 1.0  # empty frames after the last vehicle left
_MEAN_GAP_S = 1.6  # mean time between identities entering their first camera
_CROSS_S = (4.0, 6.0)  # time a vehicle takes to cross a frame
_FULL_ROUTE_P = 0.7  # share of identities that pass every camera
_MIN_VISIBLE = 0.6  # a box enters the ground truth when this much of it is inside the frame
_ROI_MARGIN_PX = 30  # config ROI: ignore box centres this close to the left/right border (px at 640x360)


@dataclass
class Scene:
    """Where a generated scene lives."""

    out_dir: Path
    camera_ids: list[str]
    videos: dict[str, Path]
    fps: float
    size: tuple[int, int]  # (width, height)
    gt_mtmc: Path  # AI City MTMC ground truth, all cameras
    gt_mot: dict[str, Path]  # camera id -> MOTChallenge gt text
    config: Path  # a ready reidd cameras.yaml for this scene
    meta: Path  # scene.json: seed, params, identities and their per-camera appearances
    num_frames: int = 0


@dataclass
class _Appearance:
    """One pass of one identity through one camera (times in seconds, frames 0-based)."""

    obj_id: int
    cam: int
    frame_w: int  # width of the camera's frame, px
    lane: int
    direction: int
    t_enter: float  # the leading edge touches the frame border
    speed: float  # px per second
    w: int
    h: int
    sprite: tuple[np.ndarray, np.ndarray]
    transit_s: float | None = None  # from leaving the previous camera of the route to entering this one
    crop: str | None = None  # path of the real crop shown, if any
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # 0-based, some pixel visible
    xs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # left x per frame in ``frames``
    ys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # top y per frame
    gt: list[tuple[int, int, int, int, int]] = field(default_factory=list)  # (frame0, x, y, w, h) >= 60 % in

    @property
    def t_exit(self) -> float:
        """The trailing edge leaves the frame."""
        return self.t_enter + (self.frame_w + self.w) / self.speed


def _check_args(cameras: int, vehicles: int, fps: float, size: tuple[int, int],
                transit_s: tuple[float, float], seed: int) -> tuple[int, int]:
    if not isinstance(cameras, int) or not 1 <= cameras <= 99:
        raise ValueError(f"cameras: must be an integer in 1..99, got {cameras!r}")
    if not isinstance(vehicles, int) or not 1 <= vehicles <= 1000:
        raise ValueError(f"vehicles: must be an integer in 1..1000, got {vehicles!r}")
    if not (isinstance(fps, (int, float)) and 1.0 <= fps <= 120.0):
        raise ValueError(f"fps: must be in 1..120, got {fps!r}")
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size: must be (width, height), got {size!r}") from None
    if not (96 <= w <= 4096 and 64 <= h <= 4096) or w % 2 or h % 2:
        raise ValueError(f"size: width in 96..4096 and height in 64..4096, both even; got {w}x{h}")
    try:
        lo, hi = (float(v) for v in transit_s)
    except (TypeError, ValueError):
        raise ValueError(f"transit_s: must be (min, max) seconds, got {transit_s!r}") from None
    if not 0 <= lo <= hi <= 3600:
        raise ValueError(f"transit_s: need 0 <= min <= max <= 3600, got {transit_s!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    return w, h


def _load_crops(crops_dir: Path, cameras: int, vehicles: int,
                rng: np.random.Generator) -> tuple[int, list[tuple[str, str, list[Path]]]]:
    """Pick identities from a vn-2cam style folder: (cameras used, [(pid, type, [path per camera])])."""
    manifest = crops_dir / "manifest.csv"
    if not manifest.is_file():
        raise ValueError(f"crops_dir: {manifest} not found (expected columns path,pid,vehicle_type,camid)")
    by_pid: dict[str, dict[int, Path]] = {}
    types: dict[str, str] = {}
    with manifest.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {"path", "pid", "vehicle_type", "camid"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"crops_dir: {manifest} lacks column(s) {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                cam = int(row["camid"])
            except ValueError:
                msg = f"crops_dir: {manifest} line {line}: camid {row['camid']!r} is not an integer"
                raise ValueError(msg) from None
            by_pid.setdefault(row["pid"], {}).setdefault(cam, crops_dir / row["path"])
            types[row["pid"]] = row["vehicle_type"]
    n_cams = len({c for cams in by_pid.values() for c in cams})
    if cameras > n_cams:
        log.warning("crops: %s has %d camera(s); using %d cameras instead of %d", crops_dir, n_cams, n_cams, cameras)
        cameras = n_cams
    complete = sorted(p for p, cams in by_pid.items() if all(c in cams for c in range(1, cameras + 1)))
    if not complete:
        raise ValueError(f"crops_dir: no identity in {manifest} has images for camids 1..{cameras}")
    if vehicles > len(complete):
        log.warning("crops: only %d identities have images in cameras 1..%d; using %d vehicles", len(complete),
                    cameras, len(complete))
    chosen = rng.choice(len(complete), size=min(vehicles, len(complete)), replace=False)
    picks = [(complete[i], types[complete[i]], [by_pid[complete[i]][c] for c in range(1, cameras + 1)])
             for i in chosen]
    return cameras, picks


def _place(a: _Appearance, layout: render.Layout, fps: float) -> None:
    """Fill an appearance's per-frame positions from its entry time and speed."""
    width = layout.width
    f0 = math.floor(a.t_enter * fps)
    f1 = math.ceil(a.t_exit * fps)
    frames = np.arange(max(0, f0), f1 + 1)
    t = frames / fps
    travelled = a.speed * (t - a.t_enter)
    left = -a.w + travelled if a.direction > 0 else width - travelled
    xs = np.rint(left).astype(np.int64)
    keep = (xs < width) & (xs + a.w > 0)
    a.frames, a.xs = frames[keep], xs[keep]
    yc = np.array([layout.lane_y(a.lane, x + a.w / 2) for x in a.xs])
    a.ys = np.rint(yc - a.h / 2).astype(np.int64)


def _conflicts(a: _Appearance, others: list[_Appearance], min_gap_px: float) -> bool:
    """True when ``a`` comes closer than the required gap to a vehicle already in its lane."""
    for b in others:
        if b.lane != a.lane or b.frames.size == 0 or a.frames.size == 0:
            continue
        lo, hi = max(a.frames[0], b.frames[0]), min(a.frames[-1], b.frames[-1])
        if lo > hi:
            continue
        ia = slice(int(lo - a.frames[0]), int(hi - a.frames[0]) + 1)
        ib = slice(int(lo - b.frames[0]), int(hi - b.frames[0]) + 1)
        xa, xb = a.xs[ia], b.xs[ib]
        gap = np.maximum(xb - (xa + a.w), xa - (xb + b.w))
        need = min_gap_px + 0.5 * max(a.w, b.w)
        if np.any(gap < need):
            return True
    return False


def _gt_boxes(a: _Appearance, width: int, height: int) -> list[tuple[int, int, int, int, int]]:
    """(frame0, x, y, w, h) of the frames where at least 60 % of the box is inside; clipped."""
    out = []
    full = a.w * a.h
    for f, x, y in zip(a.frames.tolist(), a.xs.tolist(), a.ys.tolist()):
        x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + a.w), min(height, y + a.h)
        if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) < _MIN_VISIBLE * full:
            continue
        out.append((f, x0, y0, x1 - x0, y1 - y0))
    return out


class _YamlDumper(yaml.SafeDumper):
    """Block style, except lists of scalars (points) in flow style; no anchors."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: list[object]) -> yaml.Node:
    flow = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_YamlDumper.add_representer(list, _represent_list)


def _write_config(path: Path, camera_ids: list[str], videos: dict[str, Path], fps: float, size: tuple[int, int],
                  transit_s: tuple[float, float], seed: int, smallest_px: float) -> None:
    """Write a cameras.yaml for replaying the scene; ``smallest_px`` is the pixel area of the smallest vehicle.

    The ROI leaves out a band along the left and right borders: a vehicle cut by the border is not tracked
    until most of it is in view, so tracks start with the whole box (ByteTrack's Kalman filter adapts the
    box's aspect ratio only slowly).
    """
    width, height = size
    scale = min(width / render.REF_W, height / render.REF_H)
    m = max(2, round(_ROI_MARGIN_PX * scale))
    roi = [[m, 0], [width - m, 0], [width - m, height], [m, height]]
    min_area = max(16, int(0.5 * smallest_px))  # also drops most vehicles that are barely inside the frame
    cfg = {
        "cameras": [{"id": c, "url": videos[c].name, "roi": roi} for c in camera_ids],
        "detector": {
            "type": "motion",
            "motion": {
                "history": 200,
                "var_threshold": 25.0,
                "warmup_frames": max(1, int(_LEAD_IN_S * fps) - 1),
                "kernel": max(3, int(round(5 * scale)) | 1),
                "min_area": min_area,
                "max_area_frac": 0.25,
            },
        },
        "tracker": {"type": "bytetrack"},
        "matching": {
            "topology": [
                {"src": a, "dst": b, "min_s": round(max(0.0, transit_s[0] - 1.0), 3),
                 "max_s": round(transit_s[1] + _CROSS_S[1] * 1.1 + 2.0, 3), "bidirectional": False}
                for a, b in zip(camera_ids, camera_ids[1:])
            ],
        },
        "gallery": {"state_dir": ".state/reidd"},
        "events": {"spool_dir": ".state/spool"},
    }
    header = (f"# Synthetic scene from `reidd synth` (seed {seed}); ground truth in gt/, details in scene.json.\n"
              f"# Replay: reidd replay --config {path.name} --out out\n")
    path.write_text(header + yaml.dump(cfg, Dumper=_YamlDumper, sort_keys=False), encoding="utf-8")


def _sprites(look: render.VehicleLook, crop_paths: list[Path] | None, plan: list[tuple], layouts: list[render.Layout],
             cam_looks: list[render.CameraLook], scale: float) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """The identity's sprite per (camera, travel direction) for the cameras of its route."""
    sprites: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    if crop_paths is not None:  # real crops keep their own view: no flip, no relighting
        for k, _, _, _, size_f in plan:
            length, max_h = look.length * scale * size_f, 0.85 * layouts[k].spacing
            sprites[k, 1] = sprites[k, -1] = render.crop_sprite(crop_paths[k], length, max_h)
        return sprites
    canon = render.draw_canonical(look)
    for k, _, _, _, size_f in plan:
        length, max_h = look.length * scale * size_f, 0.85 * layouts[k].spacing
        for d in (1, -1):
            sprites[k, d] = render.drawn_sprite(canon, length, max_h, cam_looks[k], scale, d)
    return sprites


def _schedule(obj_id: int, t_arrive: float, cross_s: float, plan: list[tuple],
              sprites: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]], crop_paths: list[Path] | None,
              layouts: list[render.Layout], appearances: list[list[_Appearance]], fps: float,
              min_gap_px: float) -> tuple[float, list[_Appearance]]:
    """Place one identity along its route, delaying its arrival until no lane gets crowded.

    ``plan`` holds per camera of the route: (camera, lane preference, transit candidates, speed factor, size
    factor). Returns the arrival time used and the appearances (not yet added to ``appearances``).
    """
    while True:
        chosen: list[_Appearance] = []
        t_prev_exit: float | None = None
        for k, lanes, transits, speed_f, _ in plan:
            found = None
            for tr in transits if t_prev_exit is not None else [None]:
                t_enter = t_arrive if t_prev_exit is None or tr is None else t_prev_exit + tr
                for lane in lanes:
                    d = layouts[k].lane_dirs[lane]
                    sprite = sprites[k, d]
                    h, w = sprite[1].shape
                    a = _Appearance(obj_id, k, layouts[k].width, lane, d, t_enter,
                                    (layouts[k].width + w) / (cross_s * speed_f), w, h, transit_s=tr, sprite=sprite,
                                    crop=None if crop_paths is None else str(crop_paths[k]))
                    _place(a, layouts[k], fps)
                    if not _conflicts(a, appearances[k], min_gap_px):
                        found = a
                        break
                if found is not None:
                    break
            if found is None:
                break
            chosen.append(found)
            t_prev_exit = found.t_exit
        if len(chosen) == len(plan):
            return t_arrive, chosen
        t_arrive += 0.25


def _write_videos(out: Path, camera_ids: list[str], backgrounds: list[np.ndarray],
                  appearances: list[list[_Appearance]], num_frames: int, fps: float, progress: bool) -> dict[str, Path]:
    """Render and encode every camera, one frame at a time; check OpenCV reads the frame count back."""
    videos: dict[str, Path] = {}
    height, width = backgrounds[0].shape[:2]
    with tqdm(total=len(camera_ids) * num_frames, desc="synth frames", unit="frame", disable=not progress) as bar:
        for k, cid in enumerate(camera_ids):
            cv2.imwrite(str(out / "backgrounds" / f"{cid}.png"), backgrounds[k])
            videos[cid] = out / f"{cid}{_EXT}"
            draws: dict[int, list[tuple[int, int, tuple[np.ndarray, np.ndarray]]]] = {}
            for a in sorted(appearances[k], key=lambda a: (a.lane, a.obj_id)):
                for f, x, y in zip(a.frames.tolist(), a.xs.tolist(), a.ys.tolist()):
                    draws.setdefault(f, []).append((x, y, a.sprite))
            writer = cv2.VideoWriter(str(videos[cid]), cv2.VideoWriter_fourcc(*_FOURCC), fps, (width, height))
            if not writer.isOpened():
                raise RuntimeError(f"cv2.VideoWriter cannot write {videos[cid]} with codec {_FOURCC}")
            try:
                for f in range(num_frames):
                    frame = backgrounds[k].copy()
                    for x, y, sprite in draws.get(f, ()):
                        render.paste(frame, sprite, x, y)
                    writer.write(frame)
                    bar.update(1)
            finally:
                writer.release()
            cap = cv2.VideoCapture(str(videos[cid]))
            got = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            cap.release()
            if got != num_frames:
                raise RuntimeError(f"{videos[cid]}: OpenCV reports {got} frames, wrote {num_frames}")
    return videos


def _write_ground_truth(out: Path, camera_ids: list[str], appearances: list[list[_Appearance]], width: int,
                        height: int) -> tuple[Path, dict[str, Path]]:
    """Fill each appearance's ``gt`` and write gt/gt_mtmc.txt and gt/<camera>.txt (sorted by frame, id)."""
    rows: list[list[tuple[int, int, int, int, int, int]]] = []
    for apps in appearances:
        cam_rows = []
        for a in apps:
            a.gt = _gt_boxes(a, width, height)
            cam_rows += [(f + 1, a.obj_id, x, y, w, h) for f, x, y, w, h in a.gt]
        rows.append(sorted(cam_rows))
    gt_mot = {}
    for cid, cam_rows in zip(camera_ids, rows):
        gt_mot[cid] = out / "gt" / f"{cid}.txt"
        gt_mot[cid].write_text("".join(mot.format_line(f, o, x, y, w, h, 1) for f, o, x, y, w, h in cam_rows),
                               encoding="utf-8")
    gt_mtmc = out / "gt" / "gt_mtmc.txt"
    gt_mtmc.write_text("".join(mtmc.format_line(cid, o, f, x, y, w, h)
                               for cid, cam_rows in zip(camera_ids, rows) for f, o, x, y, w, h in cam_rows),
                       encoding="utf-8")
    return gt_mtmc, gt_mot


def _appearance_json(a: _Appearance, camera_id: str) -> dict[str, object]:
    return {
        "camera": camera_id, "lane": a.lane, "direction": a.direction,
        "enter_frame": int(a.frames[0]) + 1, "exit_frame": int(a.frames[-1]) + 1,
        "first_gt_frame": a.gt[0][0] + 1 if a.gt else None, "last_gt_frame": a.gt[-1][0] + 1 if a.gt else None,
        "enter_s": round(a.t_enter, 4), "exit_s": round(a.t_exit, 4),
        "transit_s": None if a.transit_s is None else round(a.transit_s, 4),
        "speed_px_s": round(a.speed, 3), "box_w": a.w, "box_h": a.h, "crop": a.crop,
    }


def generate_scene(out_dir: str | Path, *, cameras: int = 3, vehicles: int = 12, fps: float = 10.0,
                   size: tuple[int, int] = (640, 360), seed: int = 0,
                   transit_s: tuple[float, float] = (2.0, 6.0), crops_dir: str | Path | None = None,
                   progress: bool = True) -> Scene:
    """Generate a scene into ``out_dir`` (created; its files are overwritten) and return where it lies.

    With ``crops_dir`` (a folder with a vn-2cam style ``manifest.csv``) real vehicle crops are composited
    instead of drawn vehicles: identity i shows its camid-k image in camera k, so ``cameras`` is clamped to
    the number of camids in the manifest.
    """
    width, height = _check_args(cameras, vehicles, fps, size, transit_s, seed)
    fps = float(fps)
    lo, hi = transit_s = (float(transit_s[0]), float(transit_s[1]))
    out = Path(out_dir)
    scale = min(width / render.REF_W, height / render.REF_H)

    crops: list[tuple[str, str, list[Path]]] | None = None
    if crops_dir is not None:
        cameras, crops = _load_crops(Path(crops_dir), cameras, vehicles, np.random.default_rng([seed, 7]))
        vehicles = len(crops)
    camera_ids = [f"c{i + 1:03d}" for i in range(cameras)]

    # Cameras: road layout, background, lighting. Each part of the scene has its own seeded stream.
    layouts, backgrounds, cam_looks = [], [], []
    for k in range(cameras):
        rng = np.random.default_rng([seed, 1, k])
        layouts.append(render.make_layout(rng, width, height))
        backgrounds.append(render.make_background(rng, layouts[-1]))
        cam_looks.append(render.random_camera_look(rng))

    # Identities: look and route.
    looks: list[render.VehicleLook] = []
    routes: list[list[int]] = []
    for i in range(vehicles):
        rng = np.random.default_rng([seed, 2, i])
        looks.append(render.random_look(rng))
        if cameras == 1 or rng.random() < _FULL_ROUTE_P:
            routes.append(list(range(cameras)))
        else:
            n = int(rng.integers(1, cameras))
            start = int(rng.integers(0, cameras - n + 1))
            routes.append(list(range(start, start + n)))

    # Schedule: identities arrive one after another and pass their cameras in order.
    appearances: list[list[_Appearance]] = [[] for _ in range(cameras)]
    per_identity: list[list[_Appearance]] = []
    rng = np.random.default_rng([seed, 3])
    t_arrive = _LEAD_IN_S
    for i in range(vehicles):
        t_arrive += float(rng.uniform(0.5, 1.5)) * _MEAN_GAP_S if i else 0.0
        cross = float(rng.uniform(*_CROSS_S))
        plan = []
        for k in routes[i]:
            lanes = [int(v) for v in rng.permutation(len(layouts[k].lane_centres))]
            drawn = float(rng.uniform(lo, hi))
            sweep = sorted(np.linspace(lo, hi, 9).tolist(), key=lambda v: abs(v - drawn))
            plan.append((k, lanes, [drawn] + sweep, float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.85, 1.15))))
        crop_paths = None if crops is None else crops[i][2]
        sprites = _sprites(looks[i], crop_paths, plan, layouts, cam_looks, scale)
        t_arrive, chosen = _schedule(i + 1, t_arrive, cross, plan, sprites, crop_paths, layouts, appearances, fps,
                                     8 * scale)
        for a in chosen:
            appearances[a.cam].append(a)
        per_identity.append(chosen)
    num_frames = int(math.ceil((max(a.t_exit for c in appearances for a in c) + _TAIL_S) * fps))

    (out / "gt").mkdir(parents=True, exist_ok=True)
    (out / "backgrounds").mkdir(exist_ok=True)
    gt_mtmc, gt_mot = _write_ground_truth(out, camera_ids, appearances, width, height)
    videos = _write_videos(out, camera_ids, backgrounds, appearances, num_frames, fps, progress)
    config = out / "config.yaml"
    smallest = min(float(a.sprite[1].sum()) for c in appearances for a in c)
    _write_config(config, camera_ids, videos, fps, (width, height), transit_s, seed, smallest)

    identities = []
    for i, apps in enumerate(per_identity):
        rec: dict[str, object] = {"obj_id": i + 1, "route": [camera_ids[a.cam] for a in apps]}
        if crops is not None:
            rec.update(source="crop", pid=crops[i][0], vehicle_type=crops[i][1])
        else:
            rec.update(source="drawn", look=looks[i].to_json())
        rec["appearances"] = [_appearance_json(a, camera_ids[a.cam]) for a in apps]
        identities.append(rec)
    doc = {
        "generator": "reidd.synth",
        "seed": seed,
        "params": {"cameras": cameras, "vehicles": vehicles, "fps": fps, "size": [width, height],
                   "transit_s": list(transit_s), "crops_dir": None if crops_dir is None else str(crops_dir),
                   "codec": _FOURCC, "min_visible": _MIN_VISIBLE, "cross_s": list(_CROSS_S)},
        "num_frames": num_frames,
        "frames": "1-based, as in the ground truth; frame f of every camera is at (f - 1) / fps seconds",
        "cameras": [{"id": cid, "video": videos[cid].name, "background": f"backgrounds/{cid}.png",
                     "gt_mot": f"gt/{cid}.txt", "layout": layouts[k].to_json(), "look": cam_looks[k].to_json()}
                    for k, cid in enumerate(camera_ids)],
        "identities": identities,
    }
    meta = out / "scene.json"
    meta.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    log.info("synth: wrote %d camera(s) x %d frames (%.1f s), %d identities to %s", cameras, num_frames,
             num_frames / fps, vehicles, out)
    return Scene(out, camera_ids, videos, fps, (width, height), gt_mtmc, gt_mot, config, meta, num_frames)
