"""Detections from MOTChallenge files (``detector.type: file``) and re-running the association (rematch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import ROOT
from reidd.config import ConfigError, DetectorConfig, load_config
from reidd.detect.base import DetectorLoadError
from reidd.detect.file import FileDetector, read_mot_detections
from reidd.types import Frame


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_mot_lines_with_optional_class(tmp_path: Path) -> None:
    f = write(tmp_path / "c1.txt", "# comment\n\n1,-1,10,20,30,40,0.9,-1,-1,-1\n1 5 100 100 50 60 0.3\n"
                                   "3,-1,0,0,10,10,1.7,7\n")
    dets, has_class = read_mot_detections(f)
    assert sorted(dets) == [1, 3] and has_class
    d1 = dets[1]
    assert d1.xyxy.tolist() == [[10, 20, 40, 60], [100, 100, 150, 160]]
    assert d1.conf.tolist() == pytest.approx([0.9, 0.3])
    assert d1.cls.tolist() == [2, 2]  # -1 (MOT world coordinates) and absent: unknown, reported as car
    assert dets[3].cls.tolist() == [7] and dets[3].conf.tolist() == [1.0]  # clamped into 0..1


@pytest.mark.parametrize("line, expect", [
    ("1,-1,10,20,30", "expected frame,id,x,y,w,h,conf"),
    ("1,-1,10,abc,30,40,0.9", "must be numbers"),
    ("0,-1,10,20,30,40,0.9", "frame must be a whole number >= 1"),
    ("1.5,-1,10,20,30,40,0.9", "frame must be a whole number >= 1"),
    ("2,-1,10,20,0,40,0.9", "width and height must be > 0"),
    ("2,-1,10,20,nan,40,0.9", "finite"),
    ("2,-1,10,20,30,40,0.9,car", "class (field 8) must be a number"),
])
def test_malformed_line_is_named_with_file_and_line(tmp_path: Path, line: str, expect: str) -> None:
    f = write(tmp_path / "c1.txt", "1,-1,10,20,30,40,0.9,-1,-1,-1\n" + line + "\n")
    with pytest.raises(DetectorLoadError) as exc:
        read_mot_detections(f)
    assert f"{f}:2:" in str(exc.value) and expect in str(exc.value)


def test_missing_or_binary_file(tmp_path: Path) -> None:
    with pytest.raises(DetectorLoadError, match="detection file not found"):
        read_mot_detections(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x01" * 20)
    with pytest.raises(DetectorLoadError, match="not a text file"):
        read_mot_detections(tmp_path / "bin.txt")


def test_detector_serves_frames_by_camera_and_index(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "2,-1,10,20,30,40,0.9,3\n2,-1,50,20,30,40,0.9,0\n")
    write(tmp_path / "b.txt", "1,-1,1,2,3,4,0.5\n")
    det = FileDetector(DetectorConfig(type="file", detections_dir=str(tmp_path)), ["a", "b"])
    img = np.zeros((100, 100, 3), np.uint8)
    out = det.detect([Frame("a", 0, 0.0, img), Frame("a", 1, 0.1, img), Frame("b", 0, 0.0, img)])
    assert [len(d) for d in out] == [0, 1, 1]  # frame index 1 is MOT frame 2; class 0 (person) filtered out
    assert out[1].cls.tolist() == [3]
    with pytest.raises(DetectorLoadError, match="c.txt"):
        FileDetector(DetectorConfig(type="file", detections_dir=str(tmp_path)), ["a", "c"])


def test_config_names_the_missing_folder_and_camera_file(tmp_path: Path) -> None:
    video = write(tmp_path / "v.mp4", "x")
    base = {"cameras": [{"id": "c1", "url": str(video)}, {"id": "c2", "url": str(video)}]}
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({**base, "detector": {"type": "file"}}))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert ("detector.detections_dir", "required when detector.type is 'file'") in exc.value.problems
    (tmp_path / "dets").mkdir()
    write(tmp_path / "dets" / "c1.txt", "1,-1,1,1,5,5,1\n")
    p.write_text(yaml.safe_dump({**base, "detector": {"type": "file", "detections_dir": "dets"}}))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    assert [path for path, _ in exc.value.problems] == ["cameras[1]"]
    assert "no detection file for camera 'c2'" in exc.value.problems[0][1]
    r = subprocess.run([sys.executable, "-m", "reidd.cli", "check-config", str(p)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and "cameras[1]" in r.stdout + r.stderr and "Traceback" not in r.stderr


def test_replay_with_ground_truth_boxes_and_rematch_reproduces_it(scene3, tmp_path: Path) -> None:
    """Ground-truth boxes as detections: tracking + re-ID + association alone. The recorded embeddings fed
    back through ``reidd rematch`` with the same settings give the same events and global ids."""
    from reidd.daemon import run_replay
    from reidd.evaluate.mtmc import evaluate_mtmc

    data = yaml.safe_load(Path(scene3.config).read_text())
    data["detector"] = {"type": "file", "detections_dir": str(Path(scene3.gt_mot[scene3.camera_ids[0]]).parent)}
    data["reid"] = {"input_size": [128, 128], "max_batch": 32}
    data["tracklets"] = {"max_crops": 4}
    data["metrics"] = {"enabled": False}
    cfg_path = Path(scene3.out_dir) / f"file-{tmp_path.name}.yaml"  # camera urls are relative to the scene
    cfg_path.write_text(yaml.safe_dump(data))
    out = tmp_path / "replay"
    code, _ = run_replay(load_config(cfg_path), out, events_jsonl=out / "events.jsonl", mtmc_path=out / "mtmc.txt",
                         save_crops=False, save_embeddings=True)
    assert code == 0
    res = evaluate_mtmc(scene3.gt_mtmc, out / "mtmc.txt")
    assert res["mota"] >= 0.9, res  # the boxes are the truth: only tracking can lose any
    assert res["transition_accuracy"] >= 0.85 and res["false_merges"] <= 1, res
    r = subprocess.run([sys.executable, "-m", "reidd.cli", "rematch", "--config", str(cfg_path), "--embeddings",
                        str(out / "embeddings.jsonl"), "--out", str(tmp_path / "re"), "--output-mtmc",
                        str(tmp_path / "re" / "mtmc.txt"), "--events-jsonl", str(tmp_path / "re" / "events.jsonl")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "re" / "mtmc.txt").read_bytes() == (out / "mtmc.txt").read_bytes()
    assert (tmp_path / "re" / "events.jsonl").read_bytes() == (out / "events.jsonl").read_bytes()
    # another setting changes the outcome: nothing links when no score can pass
    strict = yaml.safe_load(cfg_path.read_text())
    strict["matching"] = {**strict.get("matching", {}), "min_score": 1000.0}
    cfg2 = Path(scene3.out_dir) / f"strict-{tmp_path.name}.yaml"
    cfg2.write_text(yaml.safe_dump(strict))
    r = subprocess.run([sys.executable, "-m", "reidd.cli", "rematch", "--config", str(cfg2), "--embeddings",
                        str(out / "embeddings.jsonl"), "--out", str(tmp_path / "re2")], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0 and "(0 cross-camera matches)" in r.stdout, r.stdout + r.stderr
    # a damaged log is refused with its file and line
    bad = tmp_path / "bad.jsonl"
    lines = (out / "embeddings.jsonl").read_text().splitlines()
    bad.write_text("\n".join([lines[0], '{"q": {"cam": "c1"}}']) + "\n")
    r = subprocess.run([sys.executable, "-m", "reidd.cli", "rematch", "--config", str(cfg_path), "--embeddings",
                        str(bad), "--out", str(tmp_path / "re3")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and f"{bad}:2:" in r.stderr and "Traceback" not in r.stderr
