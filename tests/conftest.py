"""Fixtures for both tiers: offline ultralytics settings, a real redis-server per test, a generated scene, the
integration marker. Layout: tests/unit/ mirrors the reidd package and runs in-process (tests/unit/conftest.py
enforces it); tests/integration/ holds what needs servers, subprocesses, scenes or the shared assets; tests/support/
holds the helpers both use."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from support import ROOT, RedisProc


os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))


@pytest.fixture()
def one_torch_thread():
    """One torch thread for model-heavy tests: on a busy CPU extra threads only wait for each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def redis_proc(tmp_path: Path):
    r = RedisProc(tmp_path / "redis").start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def scene3(tmp_path_factory: pytest.TempPathFactory):
    """A generated 3-camera scene with ground truth (shared by the pipeline and daemon tests)."""
    from reidd.synth.scene import generate_scene

    return generate_scene(tmp_path_factory.mktemp("scene3"), cameras=3, vehicles=8, seed=1, progress=False)


@pytest.fixture()
def rng() -> np.random.Generator:
    """A seeded generator, the same in every test that asks for it."""
    return np.random.default_rng(7)


@pytest.fixture()
def video(tmp_path: Path) -> Path:
    """A file named a.mp4 that is not a video: enough for the checks that only need the file to exist."""
    p = tmp_path / "a.mp4"
    p.write_bytes(b"not really a video, but check-config only checks that the file exists")
    return p


def pytest_collection_modifyitems(config, items):
    """Everything under tests/integration/ is marked ``integration``: ``-m "not integration"`` runs the unit tier."""
    integration = Path(__file__).resolve().parent / "integration"
    for item in items:
        if integration in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)
