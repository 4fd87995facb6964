"""`reidd synth` in-process: writes a scene and rejects bad input."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from reidd.config import load_config
from reidd.synth import register

from support.media import count_frames


def test_cli_writes_a_scene_and_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="reidd")
    register(parser.add_subparsers())
    out = tmp_path / "demo"
    args = parser.parse_args(["synth", "--out", str(out), "--cameras", "2", "--vehicles", "3", "--size", "256x144",
                              "--seed", "4", "--quiet"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"reidd replay --config {out / 'config.yaml'} --out {out / 'out'}" in printed
    assert load_config(out / "config.yaml").cameras[1].id == "c002"
    assert len(count_frames(out / "c002.mp4")) == json.loads((out / "scene.json").read_text())["num_frames"]

    args = parser.parse_args(["synth", "--out", str(tmp_path / "bad"), "--size", "255x144", "--quiet"])
    assert args.func(args) == 2
    assert "size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--out", str(tmp_path), "--size", "wide"])
