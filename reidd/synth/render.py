"""Drawing for synthetic scenes: camera backgrounds, vehicle sprites, compositing.

Everything here is a pure function of its arguments and a seeded
``numpy.random.Generator``, so the same seed draws the same pixels.
Sprites are ``(bgr, alpha)`` pairs: ``bgr`` is ``h x w x 3`` uint8 and
``alpha`` is ``h x w`` float32 in 0..1, cropped so that the sprite's extent is
exactly its ground-truth box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

#: Reference frame size the pixel sizes below are given for.
REF_W, REF_H = 640, 360

#: Vehicle kinds: (probability, length range in px at 640x360, height/length).
KINDS: dict[str, tuple[float, tuple[int, int], float]] = {
    "hatchback": (0.20, (60, 80), 0.42),
    "sedan": (0.28, (75, 100), 0.36),
    "van": (0.15, (85, 110), 0.48),
    "pickup": (0.12, (85, 110), 0.42),
    "truck": (0.15, (105, 135), 0.55),
    "bus": (0.10, (120, 140), 0.34),
}

PATTERNS = ("plain", "stripe", "two_tone", "roof", "bars", "chequer", "logo")
LOGO_SHAPES = ("circle", "diamond", "square", "triangle", "ring")

#: Body colours (BGR), each one well away from asphalt grey.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (245, 245, 245),  # white
    (25, 25, 28),  # black
    (40, 40, 200),  # red
    (170, 60, 20),  # blue
    (40, 150, 40),  # green
    (30, 210, 230),  # yellow
    (20, 120, 240),  # orange
    (90, 30, 30),  # navy
    (40, 30, 120),  # maroon
    (140, 140, 20),  # teal
    (140, 40, 120),  # purple
    (150, 200, 220),  # beige
    (200, 200, 200),  # silver
    (220, 160, 90),  # light blue
    (60, 90, 110),  # brown
    (180, 120, 230),  # pink
)

_CANON_LEN = 480  # length of the canonical drawing of a vehicle, px

# Silhouettes in (u, v): u along the length from rear (0) to front (1), v down the height.
_BODY: dict[str, list[tuple[float, float]]] = {
    "sedan": [(0.0, 0.5), (0.02, 0.42), (0.22, 0.38), (0.32, 0.07), (0.68, 0.07), (0.8, 0.38), (0.97, 0.44),
              (1.0, 0.55), (1.0, 0.8), (0.0, 0.8)],
    "hatchback": [(0.0, 0.45), (0.03, 0.14), (0.62, 0.09), (0.78, 0.4), (0.97, 0.45), (1.0, 0.55), (1.0, 0.8),
                  (0.0, 0.8)],
    "van": [(0.0, 0.06), (0.78, 0.06), (0.95, 0.38), (1.0, 0.45), (1.0, 0.82), (0.0, 0.82)],
    "pickup": [(0.0, 0.42), (0.45, 0.42), (0.47, 0.1), (0.72, 0.1), (0.84, 0.42), (1.0, 0.48), (1.0, 0.8),
               (0.0, 0.8)],
    "truck": [(0.0, 0.02), (0.7, 0.02), (0.7, 0.12), (0.92, 0.12), (1.0, 0.45), (1.0, 0.82), (0.0, 0.82)],
    "bus": [(0.0, 0.04), (0.97, 0.04), (1.0, 0.12), (1.0, 0.85), (0.0, 0.85)],
}
_WINDOWS: dict[str, list[list[tuple[float, float]]]] = {
    "sedan": [[(0.35, 0.13), (0.49, 0.13), (0.49, 0.36), (0.27, 0.36)],
              [(0.52, 0.13), (0.66, 0.13), (0.76, 0.36), (0.52, 0.36)]],
    "hatchback": [[(0.07, 0.2), (0.3, 0.17), (0.3, 0.38), (0.05, 0.4)],
                  [(0.33, 0.17), (0.6, 0.15), (0.73, 0.38), (0.33, 0.38)]],
    "van": [[(0.62, 0.12), (0.77, 0.12), (0.91, 0.38), (0.62, 0.38)], [(0.3, 0.12), (0.58, 0.12), (0.58, 0.36),
                                                                        (0.3, 0.36)]],
    "pickup": [[(0.5, 0.16), (0.7, 0.16), (0.79, 0.4), (0.5, 0.4)]],
    "truck": [[(0.76, 0.17), (0.9, 0.17), (0.96, 0.42), (0.76, 0.42)]],
    "bus": [[(0.05 + 0.13 * i, 0.14), (0.15 + 0.13 * i, 0.14), (0.15 + 0.13 * i, 0.42), (0.05 + 0.13 * i, 0.42)]
            for i in range(7)],
}
_WHEELS: dict[str, tuple[tuple[float, ...], float, float]] = {  # (u centres, v centre, radius in heights)
    "sedan": ((0.2, 0.8), 0.8, 0.18),
    "hatchback": ((0.18, 0.82), 0.8, 0.17),
    "van": ((0.18, 0.82), 0.82, 0.16),
    "pickup": ((0.18, 0.82), 0.8, 0.18),
    "truck": ((0.14, 0.3, 0.84), 0.82, 0.16),
    "bus": ((0.15, 0.82), 0.85, 0.14),
}
_PATTERN_BAND: dict[str, tuple[float, float]] = {  # v range of the "side" of the body for stripes/bars
    "sedan": (0.5, 0.7), "hatchback": (0.5, 0.7), "van": (0.45, 0.72), "pickup": (0.5, 0.7),
    "truck": (0.3, 0.7), "bus": (0.5, 0.75),
}


@dataclass(frozen=True)
class VehicleLook:
    """Everything that defines how one drawn identity looks (camera independent)."""

    kind: str
    length: float  # px at the 640x360 reference size
    body: tuple[int, int, int]  # BGR
    accent: tuple[int, int, int]  # BGR of the pattern
    pattern: str
    logo: str | None  # shape of an extra door marking, or None
    logo_colour: tuple[int, int, int]
    hub: tuple[int, int, int]

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "length_ref_px": round(self.length, 2), "body_bgr": list(self.body),
                "accent_bgr": list(self.accent), "pattern": self.pattern, "logo": self.logo,
                "logo_bgr": list(self.logo_colour), "hub_bgr": list(self.hub)}


@dataclass(frozen=True)
class CameraLook:
    """Per-camera photometric variation applied to drawn vehicles."""

    contrast: float
    brightness: float
    cast: tuple[float, float, float]  # per-channel BGR offsets
    blur_sigma: float  # px at the reference size

    def to_json(self) -> dict[str, object]:
        return {"contrast": round(self.contrast, 4), "brightness": round(self.brightness, 3),
                "cast_bgr": [round(c, 3) for c in self.cast], "blur_sigma_ref_px": round(self.blur_sigma, 4)}


@dataclass
class Layout:
    """The road of one camera: parallel lanes, one travel direction each."""

    width: int
    height: int
    lane_centres: list[float]  # y of each lane's centre line at x = width / 2
    lane_dirs: list[int]  # +1 = left to right, -1 = right to left
    spacing: float  # px between lane centres
    slope: float  # dy/dx of every lane
    extras: dict[str, object] = field(default_factory=dict)

    def lane_y(self, lane: int, x: float) -> float:
        """y of a lane's centre line at column ``x``."""
        return self.lane_centres[lane] + self.slope * (x - self.width / 2)

    def to_json(self) -> dict[str, object]:
        return {"lanes": [{"index": i, "direction": d, "y_centre": round(y, 2)}
                          for i, (y, d) in enumerate(zip(self.lane_centres, self.lane_dirs))],
                "spacing_px": round(self.spacing, 2), "slope": round(self.slope, 5), **self.extras}


def _distinct_from(colour: tuple[int, int, int], other: tuple[int, int, int], min_dist: float) -> bool:
    return float(np.linalg.norm(np.subtract(colour, other, dtype=np.float64))) >= min_dist


def random_look(rng: np.random.Generator) -> VehicleLook:
    """Draw the appearance of one identity."""
    names = list(KINDS)
    probs = np.array([KINDS[k][0] for k in names])
    kind = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    lo, hi = KINDS[kind][1]
    length = float(rng.uniform(lo, hi))
    body = PALETTE[int(rng.integers(len(PALETTE)))]
    while True:
        accent = PALETTE[int(rng.integers(len(PALETTE)))]
        if _distinct_from(accent, body, 120):
            break
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    logo = LOGO_SHAPES[int(rng.integers(len(LOGO_SHAPES)))] if (pattern == "logo" or rng.random() < 0.4) else None
    while True:
        logo_colour = PALETTE[int(rng.integers(len(PALETTE)))]
        if _distinct_from(logo_colour, body, 120):
            break
    hub = ((200, 200, 200), (60, 60, 60), (40, 180, 220), (230, 230, 230))[int(rng.integers(4))]
    return VehicleLook(kind, length, body, accent, pattern, logo, logo_colour, hub)


def random_camera_look(rng: np.random.Generator) -> CameraLook:
    """Draw one camera's lighting/optics variation."""
    return CameraLook(
        contrast=float(rng.uniform(0.85, 1.15)),
        brightness=float(rng.uniform(-18, 18)),
        cast=tuple(float(c) for c in rng.uniform(-8, 8, size=3)),  # type: ignore[arg-type]
        blur_sigma=float(rng.uniform(0.0, 1.0)),
    )


# --------------------------------------------------------------------------- backgrounds
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int, amp: float) -> np.ndarray:
    """Low-frequency noise: a coarse random grid upsampled smoothly, ``h x w`` float32."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.normal(0.0, amp, size=(gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def make_layout(rng: np.random.Generator, width: int, height: int) -> Layout:
    """Choose the lanes of one camera (2 or 3, parallel, slightly slanted)."""
    n = int(rng.choice([2, 3], p=[0.4, 0.6]))
    spacing = height * 0.25
    max_len = KINDS["bus"][1][1] * min(width / REF_W, height / REF_H) * 1.15
    max_slope = min(0.04, 0.08 * spacing / max_len)
    slope = float(rng.uniform(-max_slope, max_slope))
    road_h = n * spacing
    drift = abs(slope) * width / 2
    free = height - road_h - 2 * drift - 2 * 0.06 * height
    top = 0.06 * height + drift + float(rng.uniform(0.3, 0.7)) * max(free, 0.0)
    centres = [top + spacing * (i + 0.5) for i in range(n)]
    n_left = n // 2 if rng.random() < 0.5 else n - n // 2
    dirs = [-1] * n_left + [1] * (n - n_left)
    return Layout(width, height, centres, dirs, spacing, slope)


def _line_pts(layout: Layout, y_mid: float) -> tuple[tuple[int, int], tuple[int, int]]:
    w = layout.width
    return (0, int(round(y_mid - layout.slope * w / 2))), (w - 1, int(round(y_mid + layout.slope * (w / 2 - 1))))


def make_background(rng: np.random.Generator, layout: Layout) -> np.ndarray:
    """Paint one camera's static scene: verges with objects, kerbs, asphalt, lane markings."""
    w, h = layout.width, layout.height
    s = min(w / REF_W, h / REF_H)
    ground_kind = int(rng.integers(3))
    # grass, paving or concrete
    ground = np.array([(60, 120, 70), (150, 170, 180), (120, 125, 130)][ground_kind], np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = ground + rng.uniform(-25, 25, size=3).astype(np.float32)
    img += _smooth_noise(rng, h, w, max(4, int(24 * s)), 10.0)[..., None]
    img += _smooth_noise(rng, h, w, 3, 3.0)[..., None]

    road_top = layout.lane_centres[0] - layout.spacing / 2
    road_bot = layout.lane_centres[-1] + layout.spacing / 2
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    shift = layout.slope * (xs - w / 2)
    road = (ys >= road_top + shift) & (ys <= road_bot + shift)

    # Static objects on the verges: buildings, trees, poles (drawn before the road so they never cover it).
    canvas = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        x = int(rng.integers(0, w))
        above = bool(rng.random() < 0.6)
        y_edge = road_top + layout.slope * (x - w / 2) if above else road_bot + layout.slope * (x - w / 2)
        kind = int(rng.integers(3))
        colour = tuple(int(c) for c in rng.integers(40, 220, size=3))
        if kind == 0:  # building block with windows
            bw, bh = int(rng.uniform(40, 110) * s), int(rng.uniform(30, 90) * s)
            y0 = int(y_edge - bh - 6 * s) if above else int(y_edge + 6 * s)
            cv2.rectangle(canvas, (x, y0), (x + bw, y0 + bh), colour, -1)
            step = max(4, int(12 * s))
            for wx in range(x + step // 2, x + bw - step // 2, step):
                for wy in range(y0 + step // 2, y0 + bh - step // 2, step):
                    cv2.rectangle(canvas, (wx, wy), (wx + step // 3, wy + step // 3), (60, 50, 40), -1)
        elif kind == 1:  # tree crown
            r = int(rng.uniform(10, 26) * s) + 2
            cy = int(y_edge - r - 4 * s) if above else int(y_edge + r + 4 * s)
            cv2.circle(canvas, (x, cy), r, (30, int(rng.integers(80, 140)), 40), -1, cv2.LINE_AA)
            cv2.circle(canvas, (x - r // 3, cy - r // 3), max(1, r // 2), (50, 150, 70), -1, cv2.LINE_AA)
        else:  # pole with a sign
            ph = int(rng.uniform(20, 50) * s) + 4
            y0 = int(y_edge - ph - 3 * s) if above else int(y_edge + 3 * s)
            cv2.line(canvas, (x, y0), (x, y0 + ph), (90, 90, 90), max(1, int(3 * s)))
            cv2.rectangle(canvas, (x - int(6 * s), y0), (x + int(6 * s), y0 + int(8 * s)), colour, -1)
    img = canvas.astype(np.float32)

    asphalt = float(rng.uniform(75, 110))
    tex = asphalt + _smooth_noise(rng, h, w, max(4, int(40 * s)), 6.0) + _smooth_noise(rng, h, w, 3, 3.0)
    img[road] = np.repeat(tex[road][:, None], 3, axis=1) + np.array([2, 0, -1], np.float32)
    canvas = np.clip(img, 0, 255).astype(np.uint8)

    # Kerbs along both edges, plain concrete or red/white blocks.
    kerb = max(2, int(round(6 * s)))
    striped = bool(rng.random() < 0.4)
    for edge, sign in ((road_top, -1), (road_bot, 1)):
        y_mid = edge + sign * kerb / 2
        p0, p1 = _line_pts(layout, y_mid)
        cv2.line(canvas, p0, p1, (185, 190, 195), kerb, cv2.LINE_AA)
        if striped:
            block = max(4, int(20 * s))
            for x0 in range(0, w, 2 * block):
                y = y_mid + layout.slope * (x0 + block / 2 - w / 2)
                cv2.rectangle(canvas, (x0, int(y - kerb / 2)), (x0 + block, int(y + kerb / 2)), (40, 40, 190), -1)

    # Lane markings: solid edge lines, dashes between same-direction lanes, double yellow between directions.
    thick = max(1, int(round(2 * s)))
    for edge, sign in ((road_top, 1), (road_bot, -1)):
        p0, p1 = _line_pts(layout, edge + sign * 4 * s)
        cv2.line(canvas, p0, p1, (225, 225, 225), thick, cv2.LINE_AA)
    dash, gap = max(4, int(rng.uniform(18, 30) * s)), max(4, int(rng.uniform(14, 24) * s))
    phase = int(rng.integers(0, dash + gap))
    for i in range(len(layout.lane_centres) - 1):
        y_b = (layout.lane_centres[i] + layout.lane_centres[i + 1]) / 2
        if layout.lane_dirs[i] != layout.lane_dirs[i + 1]:
            for off in (-2 * s, 2 * s):
                p0, p1 = _line_pts(layout, y_b + off)
                cv2.line(canvas, p0, p1, (40, 200, 230), thick, cv2.LINE_AA)
        else:
            for x0 in range(-phase, w, dash + gap):
                a = (x0, int(round(layout.lane_y(0, x0) - layout.lane_centres[0] + y_b)))
                b = (x0 + dash, int(round(layout.lane_y(0, x0 + dash) - layout.lane_centres[0] + y_b)))
                cv2.line(canvas, a, b, (225, 225, 225), thick, cv2.LINE_AA)
    if rng.random() < 0.5:  # a zebra crossing somewhere along the road
        xc = int(rng.uniform(0.2, 0.8) * w)
        bar = max(2, int(6 * s))
        for k in range(int(road_bot - road_top) // (2 * bar)):
            y = road_top + (2 * k + 0.5) * bar + layout.slope * (xc - w / 2)
            cv2.rectangle(canvas, (xc - int(14 * s), int(y)), (xc + int(14 * s), int(y + bar)), (215, 215, 215), -1)
        layout.extras["zebra_x"] = xc
    layout.extras["asphalt"] = round(asphalt, 2)
    layout.extras["ground"] = ["grass", "paving", "concrete"][ground_kind]
    return canvas


# --------------------------------------------------------------------------- vehicles
def _poly(pts: list[tuple[float, float]], lw: int, lh: int) -> np.ndarray:
    return np.array([[int(round(u * (lw - 1))), int(round(v * (lh - 1)))] for u, v in pts], np.int32)


def draw_canonical(look: VehicleLook) -> tuple[np.ndarray, np.ndarray]:
    """Draw one identity facing right at the canonical size; returns (bgr, alpha)."""
    lw = _CANON_LEN
    lh = int(round(lw * KINDS[look.kind][2]))
    img = np.zeros((lh, lw, 3), np.uint8)
    body = np.zeros((lh, lw), np.uint8)
    cv2.fillPoly(body, [_poly(_BODY[look.kind], lw, lh)], 255, cv2.LINE_AA)
    img[:] = look.body

    pat = np.zeros((lh, lw), np.uint8)
    v0, v1 = _PATTERN_BAND[look.kind]
    y0, y1 = int(v0 * lh), int(v1 * lh)
    if look.pattern == "stripe":
        cv2.rectangle(pat, (0, y0 + (y1 - y0) // 3), (lw, y0 + 2 * (y1 - y0) // 3), 255, -1)
    elif look.pattern == "two_tone":
        cv2.rectangle(pat, (0, (y0 + y1) // 2), (lw, lh), 255, -1)
    elif look.pattern == "roof":
        cv2.rectangle(pat, (0, 0), (lw, int(0.3 * lh)), 255, -1)
    elif look.pattern == "bars":
        step = lw // 8
        for x in range(step // 2, lw, step):
            cv2.rectangle(pat, (x, y0), (x + step // 3, y1), 255, -1)
    elif look.pattern == "chequer":
        cell = max(4, (y1 - y0) // 2)
        for j, y in enumerate(range(y0, y1 - cell + 1, cell)):
            for i, x in enumerate(range(0, lw, cell)):
                if (i + j) % 2 == 0:
                    cv2.rectangle(pat, (x, y), (x + cell - 1, y + cell - 1), 255, -1)
    img[pat > 0] = look.accent
    if look.kind == "truck":  # cab in the accent colour, cargo box in the body colour
        cab = np.zeros_like(body)
        cv2.rectangle(cab, (int(0.7 * lw), 0), (lw, lh), 255, -1)
        img[cab > 0] = look.accent if look.pattern == "plain" else look.body

    if look.logo is not None:
        cx, cy, r = int(0.45 * lw), int((y0 + y1) / 2), max(4, int(0.14 * lh))
        c = look.logo_colour
        if look.logo == "circle":
            cv2.circle(img, (cx, cy), r, c, -1, cv2.LINE_AA)
        elif look.logo == "ring":
            cv2.circle(img, (cx, cy), r, c, max(2, r // 3), cv2.LINE_AA)
        elif look.logo == "square":
            cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), c, -1)
        elif look.logo == "diamond":
            cv2.fillPoly(img, [np.array([[cx, cy - r], [cx + r, cy], [cx, cy + r], [cx - r, cy]], np.int32)], c,
                         cv2.LINE_AA)
        else:  # triangle
            cv2.fillPoly(img, [np.array([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + r]], np.int32)], c,
                         cv2.LINE_AA)

    for win in _WINDOWS[look.kind]:
        cv2.fillPoly(img, [_poly(win, lw, lh)], (70, 55, 45), cv2.LINE_AA)
        p = _poly(win, lw, lh)
        cv2.line(img, tuple(p[0]), tuple(p[2]), (120, 110, 100), max(2, lw // 80), cv2.LINE_AA)  # reflection
    # Head and tail lights, outline.
    lv = int(0.55 * lh)
    cv2.rectangle(img, (lw - max(4, lw // 40), lv - lh // 20), (lw - 1, lv + lh // 20), (150, 240, 250), -1)
    cv2.rectangle(img, (0, lv - lh // 20), (max(4, lw // 50), lv + lh // 20), (30, 30, 220), -1)
    cv2.polylines(img, [_poly(_BODY[look.kind], lw, lh)], True, (30, 30, 30), max(2, lw // 160), cv2.LINE_AA)

    us, vw, rr = _WHEELS[look.kind]
    r = int(rr * lh)
    for u in us:
        centre = (int(u * lw), int(vw * lh))
        cv2.circle(body, centre, r, 255, -1, cv2.LINE_AA)
        cv2.circle(img, centre, r, (25, 25, 25), -1, cv2.LINE_AA)
        cv2.circle(img, centre, max(2, int(r * 0.5)), look.hub, -1, cv2.LINE_AA)
    return img, body.astype(np.float32) / 255.0


def _tight(bgr: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop a sprite to the box of its pixels with alpha >= 0.5."""
    ys, xs = np.nonzero(alpha >= 0.5)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = alpha[y0:y1, x0:x1].copy()
    return np.ascontiguousarray(bgr[y0:y1, x0:x1]), a


def drawn_sprite(canon: tuple[np.ndarray, np.ndarray], length_px: float, max_h: float, cam: CameraLook,
                 scale: float, direction: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a canonical drawing for one camera, apply its lighting and blur, face the travel direction."""
    bgr, alpha = canon
    lw = max(8.0, length_px)
    lh = lw * bgr.shape[0] / bgr.shape[1]
    if lh > max_h:
        lw, lh = lw * max_h / lh, max_h
    size = (max(4, int(round(lw))), max(3, int(round(lh))))
    out = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    a = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    out = (out - 128.0) * cam.contrast + 128.0 + cam.brightness + np.array(cam.cast, np.float32)
    sigma = cam.blur_sigma * scale
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if direction < 0:
        out, a = out[:, ::-1], a[:, ::-1]
    return _tight(out, a)


def crop_sprite(path: Path, length_px: float, max_h: float) -> tuple[np.ndarray, np.ndarray]:
    """A real vehicle crop scaled (aspect kept) to at most ``length_px`` wide and ``max_h`` tall; opaque."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"crops: cannot read image {path}")
    h, w = img.shape[:2]
    k = min(length_px / w, max_h / h)
    size = (max(4, int(round(w * k))), max(4, int(round(h * k))))
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    out = cv2.resize(img, size, interpolation=interp)
    return out, np.ones(out.shape[:2], np.float32)


def paste(frame: np.ndarray, sprite: tuple[np.ndarray, np.ndarray], x: int, y: int) -> None:
    """Alpha-composite a sprite with its top-left corner at (x, y), clipped to the frame, in place."""
    bgr, alpha = sprite
    h, w = alpha.shape
    fh, fw = frame.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(fw, x + w), min(fh, y + h)
    if x0 >= x1 or y0 >= y1:
        return
    src = bgr[y0 - y:y1 - y, x0 - x:x1 - x]
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
    dst = frame[y0:y1, x0:x1]
    dst[:] = np.clip(np.rint(a * src + (1.0 - a) * dst), 0, 255).astype(np.uint8)
