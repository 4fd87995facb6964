"""What a start leaves behind besides its own output: no alarming faiss loader lines at INFO, and no
ultralytics settings folder (``.yolo/``) in the folder reidd was started from. Subprocesses, as a user
runs reidd."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from support import ROOT
from support.media import write_video


def _env(home: Path) -> dict[str, str]:
    """The environment of a user who set nothing for ultralytics, with a home of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_CONFIG_DIR", "XDG_CONFIG_HOME"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return env


def test_faiss_loads_without_info_lines_from_its_loader(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import logging
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        import numpy as np
        from reidd.gallery.index import VectorIndex

        index = VectorIndex(8, kind="flat")
        vecs = np.eye(8, dtype=np.float32)[:3]
        index.add(["a", "b", "c"], vecs)
        scores, ids = index.search(vecs[1:2], 1)
        print("found", ids[0][0], round(float(scores[0][0]), 3))
        index.close()
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env=_env(tmp_path / "home"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "found b 1.0" in r.stdout  # faiss works
    assert "faiss.loader" not in r.stderr, r.stderr
    assert "swigfaiss" not in r.stderr and "ModuleNotFoundError" not in r.stderr, r.stderr


def test_a_motion_replay_writes_nothing_into_the_current_folder(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    clip = write_video(media / "cam.mp4", 40, 10.0)
    cfg = media / "cameras.yaml"
    cfg.write_text(yaml.safe_dump({
        "cameras": [{"id": "c1", "url": str(clip)}],
        "detector": {"type": "motion"}, "reid": {"enabled": False}, "metrics": {"enabled": False},
    }))
    work = tmp_path / "work"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "reidd", "replay", "--config", str(cfg), "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=work, env=_env(home))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "40 frames in" in r.stdout, r.stdout
    assert sorted(p.name for p in work.iterdir()) == []  # no .yolo/ (nor anything else) where it was started
    assert not (out / ".yolo").exists() and not (media / ".yolo").exists()
