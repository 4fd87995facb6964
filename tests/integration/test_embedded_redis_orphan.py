"""reidd.gallery.redis_server.EmbeddedRedis when the daemon dies without stopping it: on Linux the
redis-server goes with it (and keeps its data); a server left behind anyway is stopped by the next start
with a warning that names it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from reidd.gallery.redis_server import EmbeddedRedis, find_redis_server

from support import ROOT, free_port, polled

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux: /proc, PR_SET_PDEATHSIG")


def _running(pid: int) -> bool:
    """A live process (not a zombie waiting for its new parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


DAEMON = textwrap.dedent("""
    import sys, time
    from reidd.gallery.redis_server import EmbeddedRedis
    server = EmbeddedRedis(sys.argv[1])
    url = server.start()
    server._client(5.0).set("kept", "yes")
    print(server.pid, url, flush=True)
    time.sleep(120)
""")


def test_the_embedded_redis_dies_with_a_sigkilled_daemon_and_keeps_its_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(state)], stdout=subprocess.PIPE, text=True,
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    redis_pid = None
    try:
        line = daemon.stdout.readline().split()
        assert line, "the daemon did not start its embedded redis"
        redis_pid = int(line[0])
        assert _running(redis_pid)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        gone = polled(lambda: not _running(redis_pid), timeout=10)
        assert gone, f"redis-server pid {redis_pid} outlived the SIGKILLed daemon"
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        if redis_pid is not None and _running(redis_pid):
            os.kill(redis_pid, signal.SIGKILL)
    # it shut down on SIGTERM, saving: the next start has the data back, and no orphan to stop
    with EmbeddedRedis(state) as again:
        assert again._client(5.0).get("kept") == b"yes"


def test_a_server_left_behind_is_stopped_by_the_next_start_with_a_warning(tmp_path: Path, caplog) -> None:
    # what a daemon killed where the server cannot die with it leaves: redis-server on the state_dir,
    # in its own session, its pid in the pid file
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    pidfile = state / EmbeddedRedis.PID_NAME
    (state / "redis.conf").write_text(
        f'bind 127.0.0.1\nport {free_port()}\ndaemonize no\ndir "{state}"\npidfile "{pidfile}"\nlogfile "redis.log"\n'
        'appendonly no\nsave ""\n')
    orphan = subprocess.Popen([find_redis_server(), str(state / "redis.conf")], cwd=state, start_new_session=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert polled(lambda: pidfile.exists() and pidfile.read_text().strip() == str(orphan.pid), timeout=10)
        caplog.set_level(logging.WARNING, logger="reidd.gallery.redis_server")
        with EmbeddedRedis(state) as server:
            assert orphan.wait(timeout=20) is not None  # stopped before the new one started
            assert server.pid != orphan.pid
            assert redis.Redis.from_url(server.url, socket_timeout=5).ping()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(str(orphan.pid) in m and str(state) in m and "did not exit cleanly" in m for m in warnings), warnings
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
