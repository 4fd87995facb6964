"""reidd.telemetry.MetricsServer under load and abuse: many concurrent scrapes, many idle connections, silent
and trickling clients. Real sockets on 127.0.0.1, in this process (so the server's threads are counted by
``threading.active_count()``)."""

from __future__ import annotations

import contextlib
import errno
import resource
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from reidd.telemetry import Metrics, MetricsServer

from support import polled

IDLE_S = 10.0  # a silent connection is closed within this (MetricsServer.IDLE_TIMEOUT is 5 s)
REQUEST_S = 16.0  # a request still arriving is closed within this (MetricsServer.REQUEST_TIMEOUT is 10 s)


@pytest.fixture()
def server():
    metrics = Metrics()
    metrics.frames_read.labels(camera="c1").inc(3)
    state = {"ready": False}
    srv = MetricsServer(metrics, "127.0.0.1", 0, readiness=lambda: (state["ready"], {"why": "test"})).start()
    srv.state = state
    yield srv
    srv.stop()


@pytest.fixture()
def many_fds():
    """Room for a few hundred connections (both ends live in this process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if max(soft, want) < 1500:
        pytest.skip(f"needs ~1500 file descriptors, the limit is {max(soft, want)}")
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _raw_get(port: int, timeout: float) -> tuple[int, float]:
    """One GET /metrics on a new connection: (status, seconds from connect() to the whole answer)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), time.monotonic() - t0


def _closed_by_peer(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closed ``sock`` (EOF or reset), None if it was still open after ``within``."""
    sock.settimeout(within)
    t0 = time.monotonic()
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


def test_endpoints_keep_their_answers(server) -> None:
    base = f"http://127.0.0.1:{server.port}"
    assert server.url == f"{base}/metrics"
    code, body = _get(server.url)
    assert code == 200 and b'reidd_frames_read_total{camera="c1"} 3.0' in body
    assert _get(base + "/healthz") == (200, b'{"status":"ok"}\n')
    code, body = _get(base + "/readyz")
    assert code == 503 and b'"ready": false' in body and b'"why": "test"' in body
    server.state["ready"] = True
    assert _get(base + "/readyz")[0] == 200
    assert _get(base + "/metrics?x=1")[0] == 200
    assert _get(base + "/nothing")[0] == 404
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:  # HEAD, then GET on one connection
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, get = data.split(b"HTTP/1.1 200 OK", 2)[1:]
    assert b"Content-Length: 16" in head and head.endswith(b"\r\n\r\n")  # no body after HEAD's headers
    assert get.endswith(b'\r\n\r\n{"status":"ok"}\n')
    req = urllib.request.Request(server.url, method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 405


def test_a_readiness_check_that_raises_means_not_ready() -> None:
    def broken() -> tuple[bool, dict]:
        raise RuntimeError("boom")

    srv = MetricsServer(Metrics(), "127.0.0.1", 0, readiness=broken).start()
    try:
        code, body = _get(f"http://127.0.0.1:{srv.port}/readyz")
        assert code == 503 and b"boom" in body
    finally:
        srv.stop()


def test_port_in_use_is_an_oserror_and_stop_releases_port_and_threads() -> None:
    before = threading.active_count()
    srv = MetricsServer(Metrics(), "127.0.0.1", 0).start()
    with pytest.raises(OSError) as err:
        MetricsServer(Metrics(), "127.0.0.1", srv.port)
    assert err.value.errno == errno.EADDRINUSE
    assert _get(srv.url)[0] == 200
    srv.stop()
    srv.stop()  # twice is fine
    assert polled(lambda: threading.active_count() <= before, 10), threading.enumerate()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    MetricsServer(Metrics(), "127.0.0.1", srv.port).start().stop()  # the port is free again


def test_200_concurrent_scrapes_are_all_answered_within_seconds(server, many_fds) -> None:
    n = 200
    barrier = threading.Barrier(n)

    def one(_: int) -> tuple[int, float]:
        barrier.wait(timeout=30)
        return _raw_get(server.port, timeout=20)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n)))
    total = time.monotonic() - t0
    codes = [code for code, _ in results]
    slowest = max(took for _, took in results)
    assert codes == [200] * n
    # the old server (listen backlog 5) left dozens of these waiting for SYN retries: 3, 7, 15, 31 s
    assert slowest < 6.0 and total < 10.0, (slowest, total)


def test_idle_connections_hold_no_threads_and_do_not_block_a_scrape(server, many_fds) -> None:
    before = threading.active_count()
    idle: list[socket.socket] = []
    try:
        for _ in range(400):
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        time.sleep(1.0)  # time for the server to accept them all (the old one started a thread for each)
        grown = threading.active_count() - before
        assert grown <= 8, f"{grown} more threads with {len(idle)} idle connections"
        code, took = _raw_get(server.port, timeout=10)
        assert code == 200 and took < 3.0, took
        assert threading.active_count() - before <= 8
    finally:
        for s in idle:
            s.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as silent:
        took = _closed_by_peer(silent, within=IDLE_S)
    assert took is not None, f"the server kept a silent connection open for {IDLE_S} s"
    assert took >= 2.0, took  # not at once: a scraper gets a few seconds to send its request
    # a kept-alive connection after a scrape, too
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as kept:
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert kept.recv(4096).startswith(b"HTTP/1.1 200")
        assert _closed_by_peer(kept, within=IDLE_S) is not None


def test_a_client_trickling_its_headers_is_closed_after_the_request_timeout(server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
        t0 = time.monotonic()
        closed = None
        deadline = t0 + REQUEST_S
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                slow.sendall(b"X")  # one byte a second: never idle, never done
            if _closed_by_peer(slow, within=1.0) is not None:
                closed = time.monotonic() - t0
                break
    assert closed is not None, f"a trickling client kept its connection for {REQUEST_S} s"


def test_stop_returns_even_when_the_wake_up_pipe_is_gone(caplog: pytest.LogCaptureFixture) -> None:
    """Seen in CI: stop() raised EBADF writing to waitress' wake-up pipe (its fd closed under it), failing the
    run that called it. stop() now says so and returns (closing what it can from the calling thread)."""
    import os

    server = MetricsServer(Metrics(), "127.0.0.1", 0).start()
    for fd in server._server.trigger._fds:
        os.close(fd)
    server._server.trigger._fds = []
    t = time.monotonic()
    server.stop()
    assert time.monotonic() - t < 15
    assert "could not wake its network thread" in caplog.text
    server.stop()  # twice is fine
