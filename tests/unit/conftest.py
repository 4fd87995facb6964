"""The unit tier: tests/unit/ mirrors the reidd package (tests/unit/gallery/test_index.py tests reidd/gallery/index.py).

A unit test runs in this process alone: it starts no process and opens no socket, and the fixture below fails
any test that tries. One that needs a server, a subprocess, a generated scene or the shared assets belongs in
tests/integration/."""

from __future__ import annotations

import socket
import subprocess

import pytest

# matplotlib builds its font cache on first use by running fc-list; on a fresh machine that would happen inside
# whichever test plots first. Done here, before the guard, so the guard sees only the tests' own processes.
import matplotlib.font_manager  # noqa: E402,F401
# torch probes CUDA on import (it runs ldconfig): import it here too, so a test that imports torch first is
# not refused for torch's own process
import torch  # noqa: E402,F401


@pytest.fixture(autouse=True)
def _in_process_only(monkeypatch):
    def refuse(what: str):
        def call(*args, **kwargs):
            raise AssertionError(f"a unit test may not {what}: move the test to tests/integration/")
        return call

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse("start a process"))  # where every Popen forks
    monkeypatch.setattr(socket.socket, "connect", refuse("connect a socket"))
    monkeypatch.setattr(socket.socket, "bind", refuse("bind a socket"))
