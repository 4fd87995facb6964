"""`reidd check-config` with ``${VAR}`` set but empty where the field needs a value: one line naming the field and the
variable, exit 2; the same config with the variables set is valid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT
from support.media import write_video


def check(cfg: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("CAM1", "REDIS_URL", "METRICS_HOST", "SPOOL")}
    return subprocess.run([sys.executable, "-m", "reidd", "check-config", str(cfg)], cwd=ROOT, env={**full, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def cfg(tmp_path: Path) -> Path:
    write_video(tmp_path / "cam1.mp4", 5, 10.0)
    path = tmp_path / "cameras.yaml"
    path.write_text(
        "cameras:\n"
        "  - id: cam1\n"
        "    url: ${CAM1}\n"
        "gallery:\n"
        "  redis_url: ${REDIS_URL}\n"
        "metrics:\n"
        "  host: ${METRICS_HOST:-127.0.0.1}\n"
        "events:\n"
        "  spool_dir: ${SPOOL:-spool}\n"
    )
    return path


def problems(res: subprocess.CompletedProcess) -> list[str]:
    return [ln.strip() for ln in res.stderr.splitlines() if ln.startswith("  ")]


def test_all_set_is_valid(cfg: Path) -> None:
    res = check(cfg, CAM1=str(cfg.parent / "cam1.mp4"), REDIS_URL="redis://127.0.0.1:6379/0")
    assert res.returncode == 0, res.stderr


def test_empty_redis_url_is_named_with_its_variable(cfg: Path) -> None:
    res = check(cfg, CAM1=str(cfg.parent / "cam1.mp4"), REDIS_URL="")
    assert res.returncode == 2
    assert problems(res) == ["gallery.redis_url: ${REDIS_URL} is set but empty, and the field cannot be empty"]


def test_empty_camera_url_and_host_each_one_line(cfg: Path) -> None:
    res = check(cfg, CAM1="", REDIS_URL="redis://127.0.0.1:6379/0", METRICS_HOST="", SPOOL="")
    assert res.returncode == 2
    assert problems(res) == [
        "cameras[0].url: ${CAM1} is set but empty, and the field cannot be empty",
        "events.spool_dir: ${SPOOL} is set but empty, and the field cannot be empty",
        "metrics.host: ${METRICS_HOST} is set but empty, and the field cannot be empty",
    ], res.stderr
    assert "Traceback" not in res.stderr


def test_partly_empty_value_names_the_variable_beside_the_fields_problem(cfg: Path, tmp_path: Path) -> None:
    cfg.write_text("cameras:\n  - id: cam1\n    url: ${VIDEOS}/cam1.mp4\n")
    res = check(cfg, VIDEOS="")
    assert res.returncode == 2
    [line] = problems(res)
    assert line.startswith("cameras[0].url: video file not found: /cam1.mp4") and "${VIDEOS} is set but empty" in line


def test_literal_empty_string_is_refused(cfg: Path) -> None:
    cfg.write_text(f"cameras:\n  - id: cam1\n    url: {cfg.parent / 'cam1.mp4'}\n    rtsp_transport: tcp\n"
                   "events:\n  pubsub_channel: ''\n")
    res = check(cfg)
    assert res.returncode == 2
    [line] = problems(res)
    assert line.startswith("events.pubsub_channel: ")
