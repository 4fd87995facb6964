"""``reidd report``: one self-contained HTML page of a run's tracklets and cross-camera matches.

The page holds per-camera counts, a timeline of tracklets (inline SVG, one lane per camera, one bar
per tracklet coloured by global id, with a tooltip) and a card per cross-camera match with the two
tracklets' crops side by side, newest first, filtered by global id in the page (type ids in the box,
or open ``report.html?gid=7`` / ``report.html#gid=7``). Everything is inline: CSS, JS and the images
(JPEG data URIs), so the file can be mailed or archived as is.

Crops come from the saved best-crop files (the event's ``best_crop`` path, or the same file name under
``--crops-dir``) and otherwise are cut from the camera's video at the tracklet's largest box
(``box_summary.largest`` in frame ``box_summary.largest_frame``).

Bounded: the events file is read twice, streaming (counts, the newest ``--max-matches`` matches and
``--max-tracklets`` timeline bars; then only the tracklets those matches reference), and every image
is scaled to at most ``--crop-size`` pixels on its longer side. The one thing that grows with the
file is the set of distinct global ids per camera (for the "unique global ids" column): roughly
400 bytes per distinct id.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import html
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DEFAULT_MAX_MATCHES = 500
DEFAULT_MAX_TRACKLETS = 5000
DEFAULT_CROP_SIZE = 200


class ReportError(ValueError):
    """Input that cannot be turned into a report; the message names the file (and line)."""


# --------------------------------------------------------------------------- reading events
@dataclass
class CameraCounts:
    """Per-camera totals over the whole events file."""

    tracklets: int = 0
    matches_query: int = 0
    matches_gallery: int = 0
    global_ids: set[int] = field(default_factory=set)


@dataclass
class EventSummary:
    """What the first pass keeps: totals, the newest matches (newest first) and timeline bars."""

    cameras: dict[str, CameraCounts]
    matches: list[dict[str, Any]]
    bars: list[dict[str, Any]]
    tracklets: int = 0
    match_count: int = 0
    live: bool = False
    multi_camera_ids: int = 0  # global ids seen in two or more cameras


def iter_events(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, event)`` from a JSONL events file, validating every line."""
    from reidd.events.schema import validate_event

    with path.open("r", encoding="utf-8") as fh:
        n = 0
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    validate_event(obj)
                except ValueError as exc:  # JSONDecodeError is a ValueError
                    raise ReportError(f"{path}:{n}: not a reidd event ({exc})") from None
                yield n, obj
        except UnicodeDecodeError:
            raise ReportError(f"{path}:{n + 1}: not a UTF-8 JSONL events file") from None


def _keep_newest(heap: list[tuple[float, int, dict[str, Any]]], item: tuple[float, int, dict[str, Any]],
                 bound: int) -> None:
    """Keep the ``bound`` newest items (by time, then file line) in a min-heap."""
    if len(heap) < bound:
        heapq.heappush(heap, item)
    elif bound and item[:2] > heap[0][:2]:
        heapq.heapreplace(heap, item)


def summarize_events(path: Path, max_matches: int = DEFAULT_MAX_MATCHES,
                     max_tracklets: int = DEFAULT_MAX_TRACKLETS) -> EventSummary:
    """First pass over the events: per-camera counts, newest matches and timeline bars."""
    cams: dict[str, CameraCounts] = defaultdict(CameraCounts)
    gid_cams: dict[int, set[str]] = defaultdict(set)
    matches: list[tuple[float, int, dict[str, Any]]] = []
    bars: list[tuple[float, int, dict[str, Any]]] = []
    n_tracklets = n_matches = 0
    live = False
    for n, ev in iter_events(path):
        if ev["type"] == "tracklet":
            n_tracklets += 1
            counts = cams[ev["camera_id"]]
            counts.tracklets += 1
            if ev["global_id"] is not None:
                counts.global_ids.add(ev["global_id"])
                gid_cams[ev["global_id"]].add(ev["camera_id"])
            live = live or ev["live"]
            bar = {k: ev[k] for k in ("tracklet_id", "camera_id", "global_id", "first_ts", "last_ts", "num_boxes")}
            _keep_newest(bars, (ev["last_ts"], n, bar), max_tracklets)
        else:
            n_matches += 1
            cams[ev["query"]["camera_id"]].matches_query += 1
            cams[ev["gallery"]["camera_id"]].matches_gallery += 1
            _keep_newest(matches, (ev["media_time"], n, ev), max_matches)
    return EventSummary(
        cameras=dict(cams),
        matches=[ev for *_, ev in sorted(matches, key=lambda t: t[:2], reverse=True)],
        bars=[b for *_, b in sorted(bars, key=lambda t: t[:2])],
        tracklets=n_tracklets,
        match_count=n_matches,
        live=live,
        multi_camera_ids=sum(1 for c in gid_cams.values() if len(c) > 1),
    )


def tracklet_events(path: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    """Second pass: the (latest) tracklet event of each id in ``wanted``."""
    found: dict[str, dict[str, Any]] = {}
    for _, ev in iter_events(path):
        if ev["type"] == "tracklet" and ev["tracklet_id"] in wanted:
            found[ev["tracklet_id"]] = ev
    return found


# --------------------------------------------------------------------------- crops
@dataclass
class CropStats:
    """Where the crops of the match cards came from."""

    from_files: int = 0
    from_video: int = 0
    missing: int = 0
    refused: int = 0  # best_crop paths outside the crops folders (absolute, '..', symlinks out): never read


def _encode_jpeg(image: Any, max_px: int) -> str | None:
    """A BGR image as a JPEG data URI, scaled down to ``max_px`` on its longer side."""
    import cv2

    if image is None or image.size == 0:
        return None
    h, w = image.shape[:2]
    scale = min(1.0, max_px / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


class CropSource:
    """Finds an image for a tracklet event: a saved crop file, else a cut from the camera's video."""

    def __init__(self, videos: dict[str, Path], events_dir: Path, crops_dir: Path | None, max_px: int,
                 config_crops_dir: Path | None = None):
        self.videos = videos
        self.events_dir = events_dir
        self.crops_dir = crops_dir
        self.max_px = max_px
        self.stats = CropStats()
        # An events file is input like any other: its best_crop paths may only name files inside the crops
        # folders (--crops-dir; else OUT/crops beside the events and the config's events.crops_dir).
        roots = [crops_dir] if crops_dir is not None else [events_dir / "crops", config_crops_dir]
        self.roots = [r.resolve() for r in roots if r is not None]

    def _inside_roots(self, p: Path) -> tuple[Path | None, bool]:
        """``(the real file, False)`` when ``p`` is a file inside a crops folder; ``(None, True)`` when it exists
        outside them; ``(None, False)`` when there is no such file."""
        from reidd.config import probe_path

        problem, st = probe_path(str(p))
        if problem or st is None:
            return None, False
        real = p.resolve()  # follows every symlink: a link pointing out of the folder is outside
        if not any(real.is_relative_to(root) for root in self.roots):
            return None, True
        return (real, False) if real.is_file() else (None, False)

    def _crop_file(self, ev: dict[str, Any]) -> Path | None:
        candidates: list[Path] = []
        named = ev.get("best_crop")
        if isinstance(named, str) and named:
            p = Path(named)
            candidates.append(p if p.is_absolute() else self.events_dir / p)
            if self.crops_dir is not None:
                candidates.append(self.crops_dir / p.name)
        if self.crops_dir is not None and isinstance(ev.get("tracklet_id"), str):
            candidates.append(self.crops_dir / (ev["tracklet_id"].replace(":", "_").replace("/", "_") + ".jpg"))
        refused = False
        for p in candidates:
            real, outside = self._inside_roots(p)
            if real is not None:
                return real
            refused = refused or outside
        self.stats.refused += int(refused)
        return None

    def images(self, events: list[dict[str, Any]], progress: bool = False) -> dict[str, str | None]:
        """``tracklet_id -> data URI`` (None when no image can be found) for every event given."""
        import cv2
        from tqdm import tqdm

        out: dict[str, str | None] = {}
        from_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for ev in tqdm(events, desc="crop files", unit="crop", disable=not progress, leave=False):
            path = self._crop_file(ev)
            uri = _encode_jpeg(cv2.imread(str(path)), self.max_px) if path is not None else None
            if uri is not None:
                out[ev["tracklet_id"]] = uri
                self.stats.from_files += 1
            elif ev["camera_id"] in self.videos and _largest(ev) is not None:
                from_video[ev["camera_id"]].append(ev)
            else:
                out[ev["tracklet_id"]] = None
        for cam, evs in from_video.items():
            out.update(self._cut(self.videos[cam], evs, progress))
        self.stats.missing += sum(1 for v in out.values() if v is None)
        return out

    def _cut(self, video: Path, events: list[dict[str, Any]], progress: bool) -> dict[str, str | None]:
        """Cut each event's largest box from ``video``, visiting frames in order (grab forward, seek far)."""
        import cv2
        from tqdm import tqdm

        out: dict[str, str | None] = {ev["tracklet_id"]: None for ev in events}
        cap = cv2.VideoCapture(str(video))
        if not cap.isOpened():
            return out
        pos = 0  # index of the next frame read() returns
        try:
            order = sorted(events, key=lambda e: _largest(e)[0])  # type: ignore[index]
            for ev in tqdm(order, desc=f"crops from {video.name}", unit="crop", disable=not progress, leave=False):
                frame_no, (x1, y1, x2, y2) = _largest(ev)  # type: ignore[misc]
                if frame_no < pos or frame_no - pos > 120:
                    cap.set(cv2.CAP_PROP_POS_FRAMES, frame_no)
                    pos = frame_no
                while pos < frame_no and cap.grab():
                    pos += 1
                ok, frame = cap.read()
                if not ok:
                    continue
                pos += 1
                h, w = frame.shape[:2]
                xa, ya = max(0, int(x1)), max(0, int(y1))
                xb, yb = min(w, int(round(x2))), min(h, int(round(y2)))
                if xb - xa >= 2 and yb - ya >= 2:
                    out[ev["tracklet_id"]] = _encode_jpeg(frame[ya:yb, xa:xb], self.max_px)
                    if out[ev["tracklet_id"]] is not None:
                        self.stats.from_video += 1
        finally:
            cap.release()
        return out


def _largest(ev: dict[str, Any]) -> tuple[int, tuple[float, float, float, float]] | None:
    """``(frame index, xyxy)`` of the tracklet's largest box, or None when the summary lacks it."""
    bs = ev.get("box_summary") or {}
    box, frame_no = bs.get("largest"), bs.get("largest_frame")
    if not isinstance(frame_no, int) or not isinstance(box, list) or len(box) != 4:
        return None
    return frame_no, (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


# --------------------------------------------------------------------------- HTML
_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#b8c0d0;font-size:12px;word-break:break-all}
main{padding:16px 24px;max-width:1400px}section{margin-bottom:24px}h2{font-size:16px;margin:0 0 8px}
table{border-collapse:collapse;background:#fff}th,td{padding:4px 12px;border-bottom:1px solid #e2e5ea;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{background:#eceef2}tfoot td{font-weight:600}
.timeline{background:#fff;border:1px solid #e2e5ea;width:100%;height:auto}
.timeline rect.bar{stroke:#1d2330;stroke-width:.5}.timeline rect.bar.dim{opacity:.12}
.timeline text{font-size:11px;fill:#4a5263}.timeline line{stroke:#e2e5ea}
.filter{display:flex;gap:12px;align-items:center;margin-bottom:12px}
.filter input{font:inherit;padding:4px 8px;width:220px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.card{background:#fff;border:1px solid #e2e5ea;border-left:6px solid var(--c);border-radius:4px;padding:8px}
.card[hidden]{display:none}.pair{display:flex;gap:8px;align-items:flex-end}
figure{margin:0;flex:1;min-width:0;text-align:center}
figure img{display:block;margin:auto;height:110px;width:100%;object-fit:contain}
figcaption{font-size:11px;color:#4a5263;word-break:break-all}
.noimg{height:110px;display:flex;align-items:center;justify-content:center;background:#eceef2;color:#8a92a3;
font-size:11px}
.meta{margin-top:6px;font-size:12px}.gid{font-weight:600}.arrow{align-self:center;color:#8a92a3}
.empty{color:#8a92a3}
"""

# Filters the cards (and dims timeline bars) by global id: the box takes ids separated by commas or
# spaces; ?gid=7 or #gid=7 in the URL pre-fills it.
_JS = """
(function(){
  var box=document.getElementById('gid-filter'),shown=document.getElementById('shown-count');
  var cards=document.querySelectorAll('.card'),bars=document.querySelectorAll('rect.bar');
  function apply(){
    var ids=box.value.split(/[\\s,]+/).filter(function(s){return s.length>0;});
    var n=0;
    cards.forEach(function(c){var ok=!ids.length||ids.indexOf(c.dataset.gid)>=0;c.hidden=!ok;if(ok)n++;});
    bars.forEach(function(b){b.classList.toggle('dim',ids.length>0&&ids.indexOf(b.dataset.gid)<0);});
    shown.textContent=n+' of '+cards.length+' matches shown';
  }
  var m=(location.search+'&'+location.hash.replace(/^#/,'')).match(/(?:^|[?&])gid=([^&]*)/);
  if(m)box.value=decodeURIComponent(m[1]);
  box.addEventListener('input',apply);
  apply();
})();
"""


def _colour(gid: int | None) -> str:
    """A stable, well-spread colour per global id (golden-angle hues); grey without an id."""
    if gid is None:
        return "#9aa1ad"
    return f"hsl({(gid * 137.508) % 360:.1f},65%,55%)"


def _fmt_ts(ts: float, live: bool) -> str:
    if live:
        return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{ts:.1f} s"


_CLOCK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


def _nice_step(span: float, live: bool = False, target: int = 10) -> float:
    """Tick step giving about ``target`` ticks over ``span``: 1/2/5 x 10^k seconds, or clock-friendly
    steps (1 s ... 1 day) for wall-clock timelines."""
    raw = max(span / target, 1e-9)
    if live and raw <= _CLOCK_STEPS[-1]:
        return float(next(s for s in _CLOCK_STEPS if s >= raw))
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def _pack_rows(bars: list[dict[str, Any]], max_rows: int) -> tuple[list[int], int]:
    """Greedy interval packing: a row per bar so that bars in one row do not overlap, with at most
    ``max_rows`` rows (past that a bar goes to the row that frees up first). Returns (rows, rows used)."""
    ends: list[float] = []
    row_of = [0] * len(bars)
    for i in sorted(range(len(bars)), key=lambda i: (bars[i]["first_ts"], bars[i]["last_ts"])):
        start = bars[i]["first_ts"]
        r = next((k for k, end in enumerate(ends) if end < start), None)
        if r is None and len(ends) < max_rows:
            ends.append(start)
            r = len(ends) - 1
        elif r is None:
            r = min(range(len(ends)), key=ends.__getitem__)
        ends[r] = max(ends[r], bars[i]["last_ts"])
        row_of[i] = r
    return row_of, max(len(ends), 1)


def _timeline_svg(bars: list[dict[str, Any]], cameras: list[str], live: bool, max_rows: int = 6) -> str:
    esc = html.escape
    if not bars:
        return '<p class="empty">No tracklets.</p>'
    t0 = min(b["first_ts"] for b in bars)
    t1 = max(b["last_ts"] for b in bars)
    span = max(t1 - t0, 1e-6)
    left, width, row_h, top, gap = 110, 1240, 16, 22, 8
    by_cam: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for b in bars:
        by_cam[b["camera_id"]].append(b)
    lane_top: dict[str, float] = {}
    packed: dict[str, tuple[list[int], int]] = {}
    y = top
    for c in cameras:
        packed[c] = _pack_rows(by_cam.get(c, []), max_rows)
        lane_top[c] = y
        y += packed[c][1] * row_h + gap
    height = y + 4
    x = lambda t: left + (t - t0) / span * (width - left - 10)  # noqa: E731
    parts = [f'<svg class="timeline" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" '
             f'role="img" aria-label="tracklets per camera over time">']
    step = _nice_step(span, live)
    t = int(t0 / step) * step
    while t <= t1:
        if t >= t0:
            label = datetime.fromtimestamp(t, tz=timezone.utc).strftime("%H:%M:%S") if live else f"{t:g}s"
            parts.append(f'<line x1="{x(t):.1f}" y1="{top - 4}" x2="{x(t):.1f}" y2="{height - 4}"/>'
                         f'<text x="{x(t):.1f}" y="{top - 8}" text-anchor="middle">{esc(label)}</text>')
        t += step
    for c in cameras:
        rows_used = packed[c][1]
        parts.append(f'<text x="4" y="{lane_top[c] + rows_used * row_h / 2 + 4:.1f}">{esc(c)}</text>')
        if c != cameras[0]:
            sep = lane_top[c] - gap / 2
            parts.append(f'<line x1="0" y1="{sep:.1f}" x2="{width}" y2="{sep:.1f}"/>')
        for b, r in zip(by_cam.get(c, []), packed[c][0]):
            xa, xb = x(b["first_ts"]), x(b["last_ts"])
            gid = b["global_id"]
            tip = (f'{b["tracklet_id"]} · global id {gid if gid is not None else "none"} · '
                   f'{_fmt_ts(b["first_ts"], live)} – {_fmt_ts(b["last_ts"], live)} · {b["num_boxes"]} boxes')
            parts.append(
                f'<rect class="bar" data-gid="{"" if gid is None else gid}" x="{xa:.1f}" '
                f'y="{lane_top[c] + r * row_h + 1:.1f}" width="{max(xb - xa, 2.0):.1f}" height="{row_h - 3}" rx="2" '
                f'fill="{_colour(gid)}"><title>{esc(tip)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _figure(ref: dict[str, Any], uri: str | None, live: bool) -> str:
    esc = html.escape
    img = (f'<img src="{uri}" alt="{esc(ref["tracklet_id"])}">' if uri
           else '<div class="noimg">no crop available</div>')
    return (f'<figure>{img}<figcaption>{esc(ref["camera_id"])} · {esc(ref["tracklet_id"])}<br>'
            f'{esc(_fmt_ts(ref["first_ts"], live))} – {esc(_fmt_ts(ref["last_ts"], live))}</figcaption></figure>')


def _card(m: dict[str, Any], images: dict[str, str | None], live: bool) -> str:
    esc = html.escape
    q, g, gid = m["query"], m["gallery"], m["global_id"]
    return (
        f'<div class="card" data-gid="{gid}" style="--c:{_colour(gid)}">'
        f'<div class="pair">{_figure(g, images.get(g["tracklet_id"]), live)}<span class="arrow">→</span>'
        f'{_figure(q, images.get(q["tracklet_id"]), live)}</div>'
        f'<div class="meta"><span class="gid">global id {gid}</span> · {esc(g["camera_id"])} → {esc(q["camera_id"])}'
        f' · similarity <b>{m["similarity"]:.3f}</b> · transit {m["transit_s"]:.1f} s'
        f' · at {esc(_fmt_ts(m["media_time"], live))}</div></div>'
    )


def render_html(summary: EventSummary, cameras: list[str], images: dict[str, str | None], *, title: str,
                sources: str) -> str:
    """The whole page as one string (no external resources)."""
    esc = html.escape
    rows = []
    for c in cameras:
        k = summary.cameras.get(c, CameraCounts())
        rows.append(f"<tr><td>{esc(c)}</td><td>{k.tracklets}</td><td>{k.matches_query}</td>"
                    f"<td>{k.matches_gallery}</td><td>{len(k.global_ids)}</td></tr>")
    all_ids = set().union(*(k.global_ids for k in summary.cameras.values())) if summary.cameras else set()
    table = (
        "<table><thead><tr><th>camera</th><th>tracklets</th><th>matches (as query)</th>"
        "<th>matches (as gallery)</th><th>unique global ids</th></tr></thead><tbody>" + "".join(rows) +
        f"</tbody><tfoot><tr><td>all cameras</td><td>{summary.tracklets}</td><td>{summary.match_count}</td>"
        f"<td>{summary.match_count}</td><td>{len(all_ids)}</td></tr></tfoot></table>"
        f"<p>{summary.multi_camera_ids} global id(s) seen in two or more cameras.</p>"
    )
    shown_bars = len(summary.bars)
    bars_note = "" if shown_bars == summary.tracklets else f" (newest {shown_bars} of {summary.tracklets})"
    cards = "".join(_card(m, images, summary.live) for m in summary.matches)
    matches_note = ("" if len(summary.matches) == summary.match_count
                    else f" (newest {len(summary.matches)} of {summary.match_count})")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{esc(title)}</title><style>{_CSS}</style></head>
<body><header><h1>{esc(title)}</h1><p>{esc(sources)}</p></header><main>
<section><h2>Per camera</h2>{table}</section>
<section><h2>Timeline of tracklets{esc(bars_note)}</h2>
<p>One lane per camera, one bar per tracklet, coloured by global id (hover for details).</p>
{_timeline_svg(summary.bars, cameras, summary.live)}</section>
<section><h2>Cross-camera matches{esc(matches_note)}, newest first</h2>
<div class="filter"><label for="gid-filter">Filter by global id</label>
<input id="gid-filter" type="search" placeholder="e.g. 7 or 3, 12" autocomplete="off">
<span id="shown-count"></span></div>
<div class="cards">{cards or '<p class="empty">No cross-camera matches.</p>'}</div></section>
</main><script>{_JS}</script></body></html>
"""


# --------------------------------------------------------------------------- entry points
@dataclass
class ReportResult:
    """What :func:`build_report` wrote."""

    path: Path
    tracklets: int
    matches: int
    matches_shown: int
    cameras: list[str]
    crops: CropStats
    bytes: int


def _camera_videos(config_path: Path) -> tuple[list[str], dict[str, Path], Path | None]:
    """Enabled camera ids in config order, the video file of each file camera that exists, and the
    config's ``events.crops_dir`` (resolved; None when unset)."""
    from reidd.config import ConfigError, load_config

    try:
        cfg = load_config(config_path, check_files=False)
    except ConfigError as exc:
        raise ReportError(str(exc)) from None
    base = config_path.resolve().parent

    def resolved(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else base / p

    videos: dict[str, Path] = {}
    for cam in cfg.cameras:
        if cam.kind == "file" and resolved(cam.url).is_file():
            videos[cam.id] = resolved(cam.url)
    crops = resolved(cfg.events.crops_dir) if cfg.events.crops_dir else None
    return [c.id for c in cfg.enabled_cameras], videos, crops


def build_report(events: str | Path, config: str | Path, out: str | Path, *, crops_dir: str | Path | None = None,
                 max_matches: int = DEFAULT_MAX_MATCHES, max_tracklets: int = DEFAULT_MAX_TRACKLETS,
                 crop_size: int = DEFAULT_CROP_SIZE, progress: bool = False) -> ReportResult:
    """Write the HTML report of ``events`` (JSONL) for the cameras of ``config`` to ``out``."""
    events, config, out = Path(events), Path(config), Path(out)
    if not events.is_file():
        raise ReportError(f"{events}: events file not found (write one with `reidd replay --events-jsonl` "
                          "or events.jsonl in the config)")
    if not config.is_file():
        raise ReportError(f"{config}: config file not found")
    crops = Path(crops_dir) if crops_dir is not None else None
    if crops is not None and not crops.is_dir():
        raise ReportError(f"{crops}: crops folder not found")
    for name, value, low in (("max_matches", max_matches, 0), ("max_tracklets", max_tracklets, 0),
                             ("crop_size", crop_size, 16)):
        if value < low:
            raise ReportError(f"{name}: must be >= {low}, got {value}")
    cam_ids, videos, config_crops = _camera_videos(config)
    summary = summarize_events(events, max_matches, max_tracklets)
    # enabled cameras in config order, then cameras only the events know (other workers', disabled ones)
    cameras = cam_ids + sorted(set(summary.cameras) - set(cam_ids))
    wanted = {m[side]["tracklet_id"] for m in summary.matches for side in ("query", "gallery")}
    tracklets = tracklet_events(events, wanted) if wanted else {}
    source = CropSource(videos, events.resolve().parent, crops, crop_size, config_crops_dir=config_crops)
    images = source.images([tracklets[t] for t in sorted(tracklets)], progress=progress)
    page = render_html(summary, cameras, images, title=f"reidd report: {events.parent.name or events.name}",
                       sources=f"events {events.resolve()} · config {config.resolve()} · generated "
                               f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return ReportResult(out, summary.tracklets, summary.match_count, len(summary.matches), cameras, source.stats,
                        out.stat().st_size)


def cmd_report(args: argparse.Namespace) -> int:
    """``reidd report``: exit 0 on success, 2 for bad input."""
    try:
        res = build_report(args.events, args.config, args.out, crops_dir=args.crops_dir,
                           max_matches=args.max_matches, max_tracklets=args.max_tracklets,
                           crop_size=args.crop_size, progress=not args.quiet)
    except ReportError as exc:
        print(f"reidd report: {exc}", file=sys.stderr)
        return 2
    c = res.crops
    print(f"wrote {res.path} ({res.bytes / 1024:.0f} KiB): {len(res.cameras)} camera(s), {res.tracklets} tracklets, "
          f"{res.matches} matches ({res.matches_shown} shown); crops: {c.from_files} from files, "
          f"{c.from_video} cut from videos, {c.missing} missing"
          + (f", {c.refused} best_crop paths outside the crops folder refused" if c.refused else ""))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``report`` subcommand."""
    p = subparsers.add_parser(
        "report",
        help="Write one self-contained HTML page of a run's tracklets and cross-camera matches.",
        description=(
            "Read an events JSONL file (written by reidd replay --events-jsonl, or by the config's events.jsonl) and write one "
            "HTML file with everything inline (no external URLs): per-camera counts, a timeline of tracklets per "
            "camera coloured by global id, and a card per cross-camera match with both tracklets' crops, "
            "similarity and transit time, newest first, with a filter by global id (also report.html?gid=7). "
            "Crops come from the saved best-crop files, else they are cut from the camera videos named in the "
            "config. Exit code 2 for missing or malformed input."
        ),
    )
    p.add_argument("--events", required=True, help="Events JSONL file (one reidd event per line).")
    p.add_argument("--config", required=True,
                   help="The cameras.yaml of the run: camera order and the video files crops are cut from.")
    p.add_argument("--out", required=True, help="HTML file to write (its folder is created).")
    p.add_argument("--crops-dir", default=None,
                   help="Folder of saved best crops (OUT/crops of a replay); used when the paths in the events "
                        "no longer resolve, e.g. after moving the run folder.")
    p.add_argument("--max-matches", type=int, default=DEFAULT_MAX_MATCHES,
                   help=f"Show at most this many match cards, the newest (default: {DEFAULT_MAX_MATCHES}).")
    p.add_argument("--max-tracklets", type=int, default=DEFAULT_MAX_TRACKLETS,
                   help=f"Draw at most this many tracklets on the timeline, the newest "
                        f"(default: {DEFAULT_MAX_TRACKLETS}).")
    p.add_argument("--crop-size", type=int, default=DEFAULT_CROP_SIZE,
                   help=f"Longer side of each embedded crop in pixels, at most (default: {DEFAULT_CROP_SIZE}).")
    p.add_argument("--quiet", action="store_true", help="No progress bars.")
    p.set_defaults(func=cmd_report)


def main(argv: list[str] | None = None) -> int:
    """Run ``report`` on its own (``python -m reidd.report ...``)."""
    parser = argparse.ArgumentParser(prog="reidd")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
