"""`reidd report`: built from a real (tiny) replay, checked as text and rendered in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from reidd.report import build_report, main


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny 2-camera scene replayed with re-ID: events.jsonl, crops and the config."""
    from reidd.config import load_config
    from reidd.daemon import run_replay
    from reidd.synth.scene import generate_scene

    root = tmp_path_factory.mktemp("report_run")
    scene = generate_scene(root / "scene", cameras=2, vehicles=3, fps=4, size=(256, 144), seed=3, progress=False)
    config = Path(scene.config)
    with config.open("a", encoding="utf-8") as fh:  # smaller crops and inputs keep the replay quick on a CPU
        fh.write("tracklets:\n  max_crops: 2\nreid:\n  input_size: [96, 96]\n")
    out = root / "out"
    code, _ = run_replay(load_config(config), out, events_jsonl=out / "events.jsonl")
    assert code == 0
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    matches = [e for e in events if e["type"] == "match"]
    assert matches, "the scene should produce at least one cross-camera match"
    return {"config": config, "out": out, "events_path": out / "events.jsonl", "events": events,
            "matches": matches, "tracklets": [e for e in events if e["type"] == "tracklet"]}


@pytest.fixture(scope="session")
def report(run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("report") / "report.html"
    res = build_report(run["events_path"], run["config"], path)
    return {"path": path, "html": path.read_text(encoding="utf-8"), "result": res}


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    assert Path(path).exists(), "headless Chromium is needed (apt install chromium)"
    return path


def _browse(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
                          capture_output=True, text=True, timeout=90)


def _cards(dom: str) -> list[tuple[str, bool]]:
    """(global id, hidden) of every match card in a DOM dump."""
    out = []
    for m in re.finditer(r"<div ([^>]*)class=\"card\"([^>]*)>", dom):
        attrs = m.group(1) + m.group(2)
        gid = re.search(r'data-gid="([^"]*)"', attrs)
        out.append((gid.group(1) if gid else "", re.search(r"\bhidden\b", attrs) is not None))
    return out


def test_report_is_self_contained_and_counts_match_the_events(run: dict, report: dict) -> None:
    page, res = report["html"], report["result"]
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I), "external reference"
    assert not re.search(r"url\(\s*['\"]?https?:", page, re.I) and "<link" not in page
    assert "<script src" not in page
    # one card per match event, newest first, each with both crops as inline JPEGs
    cards = re.findall(r'<div class="card" data-gid="(\d+)"', page)
    newest_first = sorted(enumerate(run["matches"]), key=lambda im: (im[1]["media_time"], im[0]), reverse=True)
    assert [int(g) for g in cards] == [m["global_id"] for _, m in newest_first]
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', page)) == 2 * len(run["matches"])
    assert res.crops.missing == 0 and res.crops.from_video == 0
    for uri in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page):
        img = cv2.imdecode(np.frombuffer(base64.b64decode(uri), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and max(img.shape[:2]) <= 200
    # one timeline bar per tracklet, and the per-camera table agrees with the events
    assert page.count('<rect class="bar"') == len(run["tracklets"])
    per_cam = Counter(t["camera_id"] for t in run["tracklets"])
    q_cam = Counter(m["query"]["camera_id"] for m in run["matches"])
    for cam, n in per_cam.items():
        gids = {t["global_id"] for t in run["tracklets"] if t["camera_id"] == cam}
        row = re.search(rf"<tr><td>{cam}</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td></tr>", page)
        assert row, cam
        assert (int(row.group(1)), int(row.group(2)), int(row.group(4))) == (n, q_cam[cam], len(gids))
    assert res.tracklets == len(run["tracklets"]) and res.matches == len(run["matches"])


def test_report_renders_in_chromium(report: dict, run: dict, tmp_path: Path) -> None:
    url = report["path"].resolve().as_uri()
    dom = _browse(url, tmp_path / "profile", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    cards = _cards(dom.stdout)
    assert len(cards) == len(run["matches"]) and not any(hidden for _, hidden in cards)
    assert f"{len(run['matches'])} of {len(run['matches'])} matches shown" in dom.stdout  # the script ran
    shot = tmp_path / "report.png"
    res = _browse(url, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (2000, 1280)
    assert shot.stat().st_size > 20_000 and float(img.std()) > 20  # a real page, not a blank one


def test_report_filter_by_global_id_in_chromium(report: dict, run: dict, tmp_path: Path) -> None:
    gid = run["matches"][0]["global_id"]
    expected = sum(1 for m in run["matches"] if m["global_id"] == gid)
    for suffix in (f"?gid={gid}", f"#gid={gid}"):
        dom = _browse(report["path"].resolve().as_uri() + suffix, tmp_path / "profile", "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        cards = _cards(dom.stdout)
        visible = [g for g, hidden in cards if not hidden]
        assert len(cards) == len(run["matches"])
        assert visible == [str(gid)] * expected, suffix
        assert f"{expected} of {len(run['matches'])} matches shown" in dom.stdout


def test_crops_cut_from_videos_when_files_are_gone(run: dict, tmp_path: Path) -> None:
    moved = tmp_path / "events.jsonl"
    with moved.open("w", encoding="utf-8") as fh:
        for ev in run["events"]:
            if ev["type"] == "tracklet" and ev["best_crop"]:
                ev = {**ev, "best_crop": str(tmp_path / "gone" / Path(ev["best_crop"]).name)}
            fh.write(json.dumps(ev) + "\n")
    res = build_report(moved, run["config"], tmp_path / "r.html", crop_size=64)
    referenced = {m[s]["tracklet_id"] for m in run["matches"] for s in ("query", "gallery")}
    assert (res.crops.from_video, res.crops.from_files, res.crops.missing) == (len(referenced), 0, 0)
    # the image of the newest match's query tracklet is that tracklet's largest box in its frame
    page = (tmp_path / "r.html").read_text()
    q = max(run["matches"], key=lambda m: m["media_time"])["query"]["tracklet_id"]
    ev = next(t for t in run["tracklets"] if t["tracklet_id"] == q)
    uri = re.search(rf'<img src="data:image/jpeg;base64,([^"]+)" alt="{re.escape(q)}">', page).group(1)
    got = cv2.imdecode(np.frombuffer(base64.b64decode(uri), np.uint8), cv2.IMREAD_COLOR)
    cap = cv2.VideoCapture(str(run["config"].parent / f"{ev['camera_id']}.mp4"))
    for _ in range(ev["box_summary"]["largest_frame"] + 1):
        ok, frame = cap.read()
        assert ok
    cap.release()
    x1, y1, x2, y2 = ev["box_summary"]["largest"]
    want = frame[max(0, int(y1)):round(y2), max(0, int(x1)):round(x2)]
    assert max(got.shape[:2]) <= 64
    want = cv2.resize(want, (got.shape[1], got.shape[0]), interpolation=cv2.INTER_AREA)
    assert float(np.abs(want.astype(np.float32) - got.astype(np.float32)).mean()) < 12
    # with --crops-dir the moved crop files are found again
    res = build_report(moved, run["config"], tmp_path / "r2.html", crops_dir=run["out"] / "crops")
    assert (res.crops.from_files, res.crops.from_video) == (len(referenced), 0)


def test_max_matches_keeps_the_newest(run: dict, tmp_path: Path) -> None:
    res = build_report(run["events_path"], run["config"], tmp_path / "r.html", max_matches=1)
    page = (tmp_path / "r.html").read_text()
    newest = max(run["matches"], key=lambda m: m["media_time"])
    assert re.findall(r'<div class="card" data-gid="(\d+)"', page) == [str(newest["global_id"])]
    assert res.matches_shown == 1 and res.matches == len(run["matches"])
    assert f"newest 1 of {len(run['matches'])}" in page


def test_bad_input_exits_2_naming_the_file(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "r.html")
    cfg = str(run["config"])
    assert main(["--events", str(tmp_path / "nope.jsonl"), "--config", cfg, "--out", out]) == 2
    assert "nope.jsonl: events file not found" in capsys.readouterr().err
    assert main(["--events", str(run["events_path"]), "--config", str(tmp_path / "no.yaml"), "--out", out]) == 2
    assert "no.yaml" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(run["events_path"].read_text().splitlines()[0] + "\n{not json\n")
    assert main(["--events", str(bad), "--config", cfg, "--out", out]) == 2
    assert "bad.jsonl:2: not a reidd event" in capsys.readouterr().err
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({**run["matches"][0], "similarity": 3.0}) + "\n")
    assert main(["--events", str(wrong), "--config", cfg, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "wrong.jsonl:1" in err and "similarity" in err
    assert main(["--events", str(run["events_path"]), "--config", cfg, "--out", out,
                 "--crops-dir", str(tmp_path / "nocrops")]) == 2
    assert "nocrops: crops folder not found" in capsys.readouterr().err
    assert main(["--events", str(run["events_path"]), "--config", cfg, "--out", out, "--max-matches", "-1"]) == 2
    assert "max_matches" in capsys.readouterr().err
    assert not Path(out).exists()


def test_live_events_without_crops_or_videos(tmp_path: Path) -> None:
    """Live events (wall-clock times) from a config of RTSP cameras: clock labels, placeholders for crops."""
    from reidd.events.schema import event_to_json, match_event, tracklet_event

    t0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    common = dict(live=True, box_summary={"largest": [1.0, 2.0, 30.0, 40.0], "largest_frame": 3}, best_crop=None,
                  cls=2, daemon_id="w1")
    a = tracklet_event(camera_id="north", local_id=1, tracklet_id="north:1:0", global_id=5, first_frame=0,
                       last_frame=50, first_ts=t0, last_ts=t0 + 5, num_boxes=51, **common)
    m = match_event(query={"tracklet_id": "south:2:0", "camera_id": "south", "first_ts": t0 + 65, "last_ts": t0 + 70},
                    gallery={"tracklet_id": "north:1:0", "camera_id": "north", "first_ts": t0, "last_ts": t0 + 5},
                    similarity=0.75, transit_s=60.0, global_id=5, daemon_id="w1")
    b = tracklet_event(camera_id="south", local_id=2, tracklet_id="south:2:0", global_id=5, first_frame=0,
                       last_frame=50, first_ts=t0 + 65, last_ts=t0 + 70, num_boxes=51, **common)
    events = tmp_path / "events.jsonl"
    events.write_text("".join(event_to_json(e) + "\n" for e in (a, m, b)))
    config = tmp_path / "cameras.yaml"
    config.write_text("cameras:\n- {id: north, url: 'rtsp://192.0.2.1/s'}\n- {id: south, url: 'rtsp://192.0.2.2/s'}\n"
                      "- {id: spare, url: 'rtsp://192.0.2.3/s', enabled: false}\n")
    res = build_report(events, config, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert res.cameras == ["north", "south"] and (res.crops.missing, res.crops.from_video) == (2, 0)
    assert page.count("no crop available") == 2 and "<img" not in page
    assert ">22:13:20<" in page  # a clock tick on the timeline axis
    assert "2023-11-14 22:13:20 UTC" in page and "transit 60.0 s" in page and "similarity <b>0.750</b>" in page


def test_best_crop_outside_the_crops_folder_is_never_read(run: dict, tmp_path: Path) -> None:
    """A crafted events file names local images (absolute, '../', a symlink out of the crops folder): the
    page holds none of them; the crops are cut from the videos instead and the refusals are counted."""
    secret = tmp_path / "secret.jpg"
    cv2.imwrite(str(secret), np.full((40, 40, 3), (255, 0, 255), np.uint8))  # magenta: easy to spot
    ev_dir = tmp_path / "ev"
    (ev_dir / "crops").mkdir(parents=True)
    (ev_dir / "crops" / "link.jpg").symlink_to(secret)
    tricks = [str(secret), "../secret.jpg", "crops/link.jpg"]
    referenced = sorted({m[s]["tracklet_id"] for m in run["matches"] for s in ("query", "gallery")})
    with (ev_dir / "events.jsonl").open("w", encoding="utf-8") as fh:
        for ev in run["events"]:
            if ev["type"] == "tracklet" and ev["tracklet_id"] in referenced:
                ev = {**ev, "best_crop": tricks[referenced.index(ev["tracklet_id"]) % len(tricks)]}
            fh.write(json.dumps(ev) + "\n")
    res = build_report(ev_dir / "events.jsonl", run["config"], tmp_path / "r.html", crop_size=64)
    assert res.crops.refused == len(referenced) and res.crops.from_files == 0
    assert res.crops.from_video == len(referenced)
    page = (tmp_path / "r.html").read_text()
    for uri in re.findall(r'<img src="data:image/jpeg;base64,([^"]+)"', page):
        img = cv2.imdecode(np.frombuffer(base64.b64decode(uri), np.uint8), cv2.IMREAD_COLOR)
        magenta = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] > 200)
        assert magenta.mean() < 0.5, "a file outside the crops folder was embedded"
    # the same files inside the crops folder are used
    inside = ev_dir / "crops" / "real.jpg"
    cv2.imwrite(str(inside), np.full((40, 40, 3), (0, 255, 0), np.uint8))
    with (ev_dir / "events2.jsonl").open("w", encoding="utf-8") as fh:
        for ev in run["events"]:
            if ev["type"] == "tracklet" and ev["tracklet_id"] in referenced:
                ev = {**ev, "best_crop": "crops/real.jpg"}
            fh.write(json.dumps(ev) + "\n")
    res = build_report(ev_dir / "events2.jsonl", run["config"], tmp_path / "r2.html", crop_size=64)
    assert res.crops.from_files == len(referenced) and res.crops.refused == 0
