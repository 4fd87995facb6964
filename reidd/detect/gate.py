"""Motion-gated detection for fixed cameras (``detector.gate``): the model looks only where something moves.

Background subtraction (MOG2 over ``detector.gate_history`` frames, one model per camera) runs on every frame,
shrunk to ``detector.gate_width`` pixels wide, where it costs a few milliseconds. Each frame then takes one of
three paths:

* **full**: the model sees the whole frame, as without the gate. Every camera's first frame, then one frame in
  ``detector.gate_every`` (so parked and slow vehicles, which the background swallows, are found again before the
  tracker lets them go), and any frame whose moving regions cover more than ``detector.gate_max_cover`` of it.
* **regions**: the moving regions (blobs grown by a margin, overlapping ones merged) are cut out and packed,
  at the scale the model would see them in the whole frame, onto model-sized canvases shared by all the frames
  of the batch (several cameras' regions in one model input). Boxes found on a canvas go back to their frame;
  a box cut by a region's inner edge is dropped (what it belongs to is found whole on the next full frame).
* **skipped**: nothing moves: no model call, no boxes. The tracker coasts (its Kalman filter predicts the tracks
  on), and the next full frame confirms them.

The model is any detector with ``detect(frames)`` (``yolo``, ``openvino``); :attr:`MotionGate.stats` counts
the paths and the model inputs.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from reidd.config import DetectorConfig
from reidd.detect.motion import Backgrounds
from reidd.types import Detections, Frame

log = logging.getLogger("reidd.detect")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels
#: Canvas pixels left empty between two regions packed on one canvas.
GAP = 4
#: A region is grown by this share of its own size on every side (a blob often covers only the moving edges
#: of a slow vehicle) and by at least MARGIN_FRAC of the frame's width.
GROW = 0.5
MARGIN_FRAC = 0.03
#: A canvas box within this many canvas pixels of a region's inner edge counts as cut by it.
EDGE_PX = 2.0


@dataclass
class GateStats:
    """What the gate did so far (frames by path, and the model inputs it made)."""

    frames: int = 0
    full: int = 0  # frames the model saw whole
    regions: int = 0  # frames whose moving regions were detected on shared canvases
    skipped: int = 0  # frames with nothing moving between full frames: no model call
    canvases: int = 0  # model inputs holding regions

    @property
    def model_inputs(self) -> int:
        return self.full + self.canvases


@dataclass
class _Placement:
    frame: int  # index in the batch
    region: Box  # frame pixels
    at: Box  # canvas pixels


class MotionGate:
    """Wraps a model detector: full frames periodically, moving regions in between, nothing where nothing moves."""

    def __init__(self, model, cfg: DetectorConfig, camera_ids: list[str] | None = None):
        self.model = model
        self.name = f"{model.name}+gate"
        self.cfg = cfg
        self.m = cfg.motion
        self.every = cfg.gate_every
        self.stats = GateStats()
        #: the last batch, frame by frame: ("full" | "regions" | "skipped", the frame's moving regions)
        self.last: list[tuple[str, list[Box]]] = []
        self._bg = Backgrounds(cfg.gate_history, self.m.var_threshold, self.m.learning_rate, 3)
        # cameras take their periodic full frame in turn, not all in one batch
        self._phase = {c: i % self.every for i, c in enumerate(camera_ids or [])}
        log.info("detection gated by motion: whole frame every %d frames, moving regions between (motion at %d px "
                 "wide, whole frame above %.0f%% moving)", self.every, cfg.gate_width, 100 * cfg.gate_max_cover)

    # ------------------------------------------------------------------ geometry of the model's input
    def canvas_size(self) -> tuple[int, int]:
        """(width, height) of one model input: the OpenVINO model's own, else ``imgsz`` square."""
        size = getattr(self.model, "input_size", None)
        return (int(size[0]), int(size[1])) if size else (self.cfg.imgsz, self.cfg.imgsz)

    def scale(self, width: int, height: int) -> tuple[float, float]:
        """Canvas pixels per frame pixel, (x, y): the scale at which the model sees this frame's first tile. An
        OpenVINO model squashes the tile to its input; a YOLO model letterboxes it (one scale for both axes)."""
        cw, ch = self.canvas_size()
        tiles = self.model.tiles_for(width, height) if hasattr(self.model, "tiles_for") else [(0, 0, width, height)]
        x0, y0, x1, y1 = tiles[0]
        tw, th = x1 - x0, y1 - y0
        if getattr(self.model, "input_size", None):
            return cw / tw, ch / th
        s = min(cw / tw, ch / th)
        return s, s

    # ------------------------------------------------------------------ motion
    def moving_regions(self, frame: Frame) -> list[Box]:
        """The frame's moving regions in frame pixels (grown, merged, inside the frame); updates the background."""
        img = frame.image
        h, w = img.shape[:2]
        sw = min(self.cfg.gate_width, w)
        sh = max(1, round(h * sw / w))
        small = img if sw == w else cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR)
        mask = self._bg.foreground(frame.camera_id, small)
        n, _, blobs, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        fx, fy = w / sw, h / sh
        margin = MARGIN_FRAC * w
        boxes = []
        for x, y, bw, bh, _ in blobs[1:n]:
            if bw * bh * fx * fy < self.m.min_area:
                continue
            x0, y0, x1, y1 = x * fx, y * fy, (x + bw) * fx, (y + bh) * fy
            gx, gy = max(margin, GROW * (x1 - x0)), max(margin, GROW * (y1 - y0))
            boxes.append((max(0, int(x0 - gx)), max(0, int(y0 - gy)), min(w, math.ceil(x1 + gx)),
                          min(h, math.ceil(y1 + gy))))
        return merge_boxes(boxes)

    # ------------------------------------------------------------------ detection
    def detect(self, frames: list[Frame]) -> list[Detections]:
        out: list[Detections] = [Detections.empty() for _ in frames]
        full: list[int] = []
        moving: list[tuple[int, list[Box]]] = []
        self.last = []
        for i, f in enumerate(frames):
            regions = self.moving_regions(f)
            seen = self._bg.seen[f.camera_id] - 1  # frames before this one
            phase = self._phase.setdefault(f.camera_id, len(self._phase) % self.every)
            h, w = f.image.shape[:2]
            covered = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in regions) / float(w * h)
            if seen == 0 or (seen - phase) % self.every == 0 or covered > self.cfg.gate_max_cover:
                full.append(i)
                self.last.append(("full", regions))
            elif regions:
                moving.append((i, regions))
                self.last.append(("regions", regions))
            else:
                self.last.append(("skipped", regions))
        self.stats.frames += len(frames)
        self.stats.full += len(full)
        self.stats.regions += len(moving)
        self.stats.skipped += len(frames) - len(full) - len(moving)
        canvases, placements = self._pack(frames, moving)
        self.stats.canvases += len(canvases)
        inputs = [frames[i] for i in full] + canvases
        if not inputs:
            return out
        found = self.model.detect(inputs)
        for i, d in zip(full, found):
            out[i] = d
        pieces: dict[int, list[Detections]] = {}
        for c, d in enumerate(found[len(full):]):
            for p in placements[c]:
                pieces.setdefault(p.frame, []).append(self._to_frame(d, p, frames[p.frame]))
        for i, parts in pieces.items():
            parts = [d for d in parts if len(d)]
            if parts:
                out[i] = Detections(np.vstack([d.xyxy for d in parts]), np.concatenate([d.conf for d in parts]),
                                    np.concatenate([d.cls for d in parts]))
        return out

    def _pack(self, frames: list[Frame],
              moving: list[tuple[int, list[Box]]]) -> tuple[list[Frame], list[list[_Placement]]]:
        """Shelf-pack the regions (tallest first) onto as few canvases as hold them, each region resized to the
        scale the model sees its frame at."""
        cw, ch = self.canvas_size()
        items = []
        for i, regions in moving:
            h, w = frames[i].image.shape[:2]
            sx, sy = self.scale(w, h)
            for r in regions:
                pw = min(cw, max(1, round((r[2] - r[0]) * sx)))
                ph = min(ch, max(1, round((r[3] - r[1]) * sy)))
                items.append((ph, pw, i, r))
        items.sort(key=lambda t: (-t[0], -t[1], t[2], t[3]))
        images: list[np.ndarray] = []
        placements: list[list[_Placement]] = []
        x = y = shelf = 0
        for ph, pw, i, r in items:
            if images and x + pw > cw:  # next shelf
                x, y, shelf = 0, y + shelf + GAP, 0
            if not images or y + ph > ch:  # next canvas
                images.append(np.zeros((ch, cw, 3), np.uint8))
                placements.append([])
                x = y = shelf = 0
            x0, y0, x1, y1 = r
            crop = frames[i].image[y0:y1, x0:x1]
            images[-1][y:y + ph, x:x + pw] = cv2.resize(crop, (pw, ph), interpolation=cv2.INTER_LINEAR)
            placements[-1].append(_Placement(i, r, (x, y, x + pw, y + ph)))
            x += pw + GAP
            shelf = max(shelf, ph)
        canvases = [Frame(camera_id="gate-canvas", index=k, ts=0.0, image=img) for k, img in enumerate(images)]
        return canvases, placements

    @staticmethod
    def _to_frame(d: Detections, p: _Placement, frame: Frame) -> Detections:
        """The canvas boxes whose centre lies in placement ``p``, in frame pixels; boxes cut by an inner edge of
        the region (one that is not the frame's border) are dropped."""
        if not len(d):
            return d
        ax0, ay0, ax1, ay1 = p.at
        cx, cy = (d.xyxy[:, 0] + d.xyxy[:, 2]) / 2, (d.xyxy[:, 1] + d.xyxy[:, 3]) / 2
        keep = (cx >= ax0) & (cx < ax1) & (cy >= ay0) & (cy < ay1)
        d = d[keep]
        if not len(d):
            return d
        b = d.xyxy.copy()
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], ax0, ax1)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], ay0, ay1)
        h, w = frame.image.shape[:2]
        rx0, ry0, rx1, ry1 = p.region
        cut = np.zeros(len(b), bool)
        if rx0 > 0:
            cut |= b[:, 0] <= ax0 + EDGE_PX
        if ry0 > 0:
            cut |= b[:, 1] <= ay0 + EDGE_PX
        if rx1 < w:
            cut |= b[:, 2] >= ax1 - EDGE_PX
        if ry1 < h:
            cut |= b[:, 3] >= ay1 - EDGE_PX
        kx, ky = (rx1 - rx0) / (ax1 - ax0), (ry1 - ry0) / (ay1 - ay0)
        b = (b - np.array([ax0, ay0, ax0, ay0], np.float32)) * np.array([kx, ky, kx, ky], np.float32)
        b += np.array([rx0, ry0, rx0, ry0], np.float32)
        return Detections(b[~cut], d.conf[~cut], d.cls[~cut])


def merge_boxes(boxes: list[Box]) -> list[Box]:
    """Boxes that overlap (or touch) merged into their union until none do; sorted for a deterministic order."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        out: list[Box] = []
        for b in boxes:
            for k, o in enumerate(out):
                if b[0] <= o[2] and o[0] <= b[2] and b[1] <= o[3] and o[1] <= b[3]:
                    out[k] = (min(b[0], o[0]), min(b[1], o[1]), max(b[2], o[2]), max(b[3], o[3]))
                    merged = True
                    break
            else:
                out.append(b)
        boxes = out
    return sorted(boxes)
