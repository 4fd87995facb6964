"""`reidd check-config`, `replay` and `run` on bad cameras.yaml files, in a subprocess: each kind of bad input
gives its message (with the field path) and exit code 2 before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import ROOT, write_config as write


def check(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidd", "check-config", str(path), *extra],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_example_config_is_valid() -> None:
    r = check(ROOT / "configs" / "cameras.example.yaml")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "gate-north" in r.stdout


def test_bad_yaml(tmp_path: Path) -> None:
    r = check(write(tmp_path, "cameras:\n  - id: c1\n    url: [unclosed\n"))
    assert r.returncode == 2
    assert "invalid YAML" in r.stderr and "line" in r.stderr


def test_unknown_key_named_with_path(tmp_path: Path, video: Path) -> None:
    r = check(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n  - {id: c2, url: a.mp4, fps_max: 3}\n"))
    assert r.returncode == 2
    assert "cameras[1].fps_max: unknown key" in r.stderr


def test_wrong_type_named_with_path(tmp_path: Path, video: Path) -> None:
    r = check(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4, max_fps: fast}\ndetector: {conf: 2}\n"))
    assert r.returncode == 2
    assert "cameras[0].max_fps" in r.stderr
    assert "detector.conf" in r.stderr  # both problems reported, not only the first
    assert "2 problem(s)" in r.stderr


def test_duplicate_camera_ids(tmp_path: Path, video: Path) -> None:
    r = check(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n  - {id: c2, url: a.mp4}\n"
                              "  - {id: c1, url: a.mp4}\n"))
    assert r.returncode == 2
    assert "cameras[2].id: duplicate camera id 'c1'" in r.stderr


def test_missing_files_named(tmp_path: Path, video: Path) -> None:
    r = check(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n  - {id: c2, url: nope.mp4}\n"
                              "  - {id: c3, url: rtsp://127.0.0.1:1/x}\n"
                              "detector: {model: models/missing.onnx}\nreid: {weights: w.pt}\n"))
    assert r.returncode == 2
    assert "cameras[1].url: video file not found" in r.stderr and "nope.mp4" in r.stderr
    assert "detector.model: model file not found" in r.stderr
    assert "reid.weights: checkpoint not found" in r.stderr
    assert "cameras[2]" not in r.stderr  # a stream URL is not a file


def test_missing_config_file(tmp_path: Path) -> None:
    r = check(tmp_path / "absent.yaml")
    assert r.returncode == 2 and "config file not found" in r.stderr


def test_run_and_replay_validate_before_starting(tmp_path: Path) -> None:
    cfg = write(tmp_path, "cameras:\n  - {id: c1, url: nope.mp4}\n")
    for cmd in (["run", "--config", str(cfg)], ["replay", "--config", str(cfg), "--out", str(tmp_path / "o")]):
        r = subprocess.run([sys.executable, "-m", "reidd", *cmd], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
        assert r.returncode == 2, (cmd, r.stderr)
        assert "cameras[0].url: video file not found" in r.stderr
    assert not (tmp_path / "o").exists()
