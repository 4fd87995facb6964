"""``detector.type: file`` with big and bad detection files, through real processes: a 50 MB file is checked and
served frame by frame in a small fraction of its size in memory (with progress messages), and ``reidd
check-config`` checks every line of every camera's file, naming file:line and exiting 2."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from support import ROOT, write_text as write

_CHILD = r"""
import json, logging, resource, sys
import numpy as np
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
import reidd.formats.mot as mot
from reidd.config import DetectorConfig
from reidd.detect.file import FileDetector
from reidd.types import Frame
mot.PROGRESS_EVERY_S = 0.0  # report as often as it checks, whatever this machine's speed
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
det = FileDetector(DetectorConfig(type="file", detections_dir=sys.argv[1], classes=[]), ["c1"])
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
img = np.zeros((1080, 1920, 3), np.uint8)
frames = json.loads(sys.argv[2])
out = det.detect([Frame("c1", f - 1, 0.0, img) for f in frames])
print(json.dumps({"grown": grown, "boxes": {str(f): d.xyxy.tolist() for f, d in zip(frames, out)},
                  "cls": {str(f): d.cls.tolist() for f, d in zip(frames, out)}}))
"""


def _big_file(path: Path, megabytes: int, watch: set[int]) -> tuple[int, dict[int, list]]:
    """Frames 1..n with 30 boxes each in order, then a second detector's boxes for every 7th frame appended
    (so the file is not sorted by frame). Returns n and the boxes of the ``watch`` frames, parsed plainly."""
    rnd = random.Random(5)
    want: dict[int, list] = {}
    size, frame = 0, 0
    with path.open("w", encoding="utf-8") as fh:
        while size < megabytes * 1_000_000:
            frame += 1
            rows = [(rnd.uniform(0, 1800), rnd.uniform(0, 1000), rnd.uniform(10, 120), rnd.uniform(10, 80),
                     rnd.random(), rnd.choice((2, 3, 5, 7))) for _ in range(30)]
            text = "".join(f"{frame},-1,{x:.2f},{y:.2f},{w:.2f},{h:.2f},{c:.4f},{k},-1,-1\n"
                           for x, y, w, h, c, k in rows)
            size += fh.write(text)
            if frame in watch:
                want[frame] = [line.split(",") for line in text.splitlines()]
        fh.write("# second detector\n")
        for f in range(7, frame + 1, 7):
            line = f"{f} -1 1900 1000 100 200 0.5 2\n"  # spaces, and over the bottom-right corner of 1920x1080
            fh.write(line)
            if f in want:
                want[f].append(line.split())
    expect = {}
    for f, rows in want.items():
        boxes = []
        for p in rows:
            x, y, w, h = (float(v) for v in p[2:6])
            boxes.append([x, y, min(x + w, 1920.0), min(y + h, 1080.0)])
        expect[f] = boxes
    return frame, expect


def test_big_file_is_served_frame_by_frame_in_little_memory(tmp_path: Path) -> None:
    dets = tmp_path / "dets"
    dets.mkdir()
    path = dets / "c1.txt"
    n, expect = _big_file(path, 50, {1, 2, 7, 700, 4900})
    size = path.stat().st_size
    frames = [1, 2, 7, 700, 4900, n, n + 5]
    r = subprocess.run([sys.executable, "-c", _CHILD, str(dets), json.dumps(frames)], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["grown"] < size / 5, (res["grown"], size)  # the old reader held ~7 bytes per byte of file
    for f, boxes in expect.items():
        assert np.allclose(res["boxes"][str(f)], boxes, atol=1e-3), f
    assert len(res["boxes"][str(n)]) == 30 + (n % 7 == 0) and res["boxes"][str(n + 5)] == []
    assert res["cls"]["7"][-1] == 2  # the appended box of frame 7 comes after the first detector's
    assert "detections c1.txt: " in r.stderr and "MB checked" in r.stderr and "Traceback" not in r.stderr



def _config(tmp_path: Path, files: dict[str, str]) -> Path:
    video = write(tmp_path / "v.mp4", "x")
    (tmp_path / "dets").mkdir()
    for cam, text in files.items():
        write(tmp_path / "dets" / f"{cam}.txt", text)
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": [{"id": c, "url": str(video)} for c in files],
                                   "detector": {"type": "file", "detections_dir": "dets"}}))
    return cfg


def _check(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidd", "check-config", str(cfg)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


def test_check_config_checks_every_line_of_the_detection_files(tmp_path: Path) -> None:
    good = "".join(f"{f},-1,10,20,30,40,0.9,2\n" for f in range(1, 200))
    cfg = _config(tmp_path, {"c1": good + "200,-1,10,20,30,40,0.9,1e30\n", "c2": good, "c3": "# nothing yet\n"})
    r = _check(cfg)
    bad = tmp_path / "dets" / "c1.txt"
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if not line.startswith("warning:")]
    assert errors == [f"{bad}:200: class (field 8) must be a whole number 0..65535 (negative: unknown), got '1e30'"]
    assert "c3.txt: no boxes" in r.stderr and "Traceback" not in r.stderr
    write(bad, good + "200,-1,10,20,1e300,40,0.9\n")
    r = _check(cfg)
    assert r.returncode == 2 and f"{bad}:200: width and height must be <=" in r.stderr, r.stderr
    write(bad, good)
    r = _check(cfg)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr
    assert "warning: detections" in r.stderr and "c3.txt: no boxes" in r.stderr
