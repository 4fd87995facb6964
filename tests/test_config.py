"""cameras.yaml validation: each kind of bad input gives its message (with the field path) and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reidd.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def check(path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidd", "check-config", str(path), *extra],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.fixture()
def video(tmp_path: Path) -> Path:
    p = tmp_path / "a.mp4"
    p.write_bytes(b"not really a video, but check-config only checks that the file exists")
    return p


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cameras.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_example_config_is_valid() -> None:
    r = check(ROOT / "configs" / "cameras.example.yaml")
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "gate-north" in r.stdout


def test_valid_minimal_config_and_defaults(tmp_path: Path, video: Path) -> None:
    cfg = load_config(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n"))
    assert cfg.cameras[0].url == str(video)  # resolved against the config's folder
    assert cfg.detector.classes == [2, 3, 5, 7] and cfg.tracker.type == "bytetrack"
    assert cfg.cameras[0].kind == "file" and not cfg.cameras[0].is_live


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


def test_env_substitution(tmp_path: Path, video: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REIDD_TEST_PASS", "s3cret")
    cfg = load_config(write(tmp_path, "cameras:\n  - {id: c1, url: 'rtsp://u:${REIDD_TEST_PASS}@h/s'}\n"
                                      "  - {id: c2, url: '${REIDD_TEST_UNSET:-a.mp4}'}\n"))
    assert cfg.cameras[0].url == "rtsp://u:s3cret@h/s"
    assert cfg.cameras[1].url == str(video)
    monkeypatch.delenv("REIDD_TEST_PASS")
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, "cameras:\n  - {id: c1, url: 'rtsp://u:${REIDD_TEST_PASS}@h/s'}\n"))
    assert ("cameras[0].url", "environment variable ${REIDD_TEST_PASS} is not set") in ei.value.problems


def test_topology_and_misc_semantics(tmp_path: Path, video: Path) -> None:
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4, roi: [[0, 0], [1, 1]]}\n"
                                    "matching: {topology: [{src: c1, dst: zz, min_s: 9, max_s: 3}]}\n"
                                    "gallery: {redis_url: 'http://x'}\n"))
    paths = {p for p, _ in ei.value.problems}
    assert "cameras[0].roi" in paths
    ei2 = None
    with pytest.raises(ConfigError) as ei2:
        load_config(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n"
                                    "matching: {topology: [{src: c1, dst: zz, min_s: 9, max_s: 3}]}\n"
                                    "gallery: {redis_url: 'http://x'}\n"))
    msgs = dict(ei2.value.problems)
    assert "unknown camera id 'zz'" in msgs["matching.topology[0].dst"]
    assert "min_s is larger than max_s" in msgs["matching.topology[0]"]
    assert "redis://" in msgs["gallery.redis_url"]


def test_run_and_replay_validate_before_starting(tmp_path: Path) -> None:
    cfg = write(tmp_path, "cameras:\n  - {id: c1, url: nope.mp4}\n")
    for cmd in (["run", "--config", str(cfg)], ["replay", "--config", str(cfg), "--out", str(tmp_path / "o")]):
        r = subprocess.run([sys.executable, "-m", "reidd", *cmd], capture_output=True, text=True, timeout=120,
                           cwd=ROOT)
        assert r.returncode == 2, (cmd, r.stderr)
        assert "cameras[0].url: video file not found" in r.stderr
    assert not (tmp_path / "o").exists()
