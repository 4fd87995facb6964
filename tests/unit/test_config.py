"""reidd.config: a minimal config and its defaults, ${ENV} substitution, topology and other semantic checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidd.config import ConfigError, load_config

from support import write_config as write


def test_valid_minimal_config_and_defaults(tmp_path: Path, video: Path) -> None:
    cfg = load_config(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n"))
    assert cfg.cameras[0].url == str(video)  # resolved against the config's folder
    assert cfg.detector.classes == [2, 3, 5, 7] and cfg.tracker.type == "bytetrack"
    assert cfg.cameras[0].kind == "file" and not cfg.cameras[0].is_live


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


def test_error_lines_show_no_terminal_controls(tmp_path: Path) -> None:
    """A hostile value echoed in an error (C1 CSI, bidi override, ESC, tab) is written as escapes, never raw."""
    path = tmp_path / "cameras.yaml"
    path.write_text('cameras:\n  - id: c1\n    url: "/nonexistent/a\\u009b2J\\u202eb\\u001b]0;x\\u0007\\tc.mp4"\n',
                    encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert not any(not c.isprintable() for line in text.splitlines() for c in line), repr(text)
    assert "\\x9b" in text and "\\u202e" in text and "\\x1b" in text
