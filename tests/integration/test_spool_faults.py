"""The event spool on a failing disk, with a real full file system and a real redis-server.

The full disk is real: a small tmpfs mounted in a private mount namespace (``unshare --mount``, as root;
``unshare --user --map-root-user --mount`` otherwise), reached from this process through
``/proc/<pid>/root`` of the process holding the namespace. Where no mount is possible (a container
without the privilege), the same tests run with the spool's segment file (or the JSONL file) a symlink
to ``/dev/full``, which the kernel answers with ENOSPC. Torn records come from a real short write: a
subprocess whose RLIMIT_FSIZE stops a write half-way (EFBIG), on any machine."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from reidd.config import load_config
from reidd.context import RunContext
from reidd.events.schema import event_to_json, tracklet_event
from reidd.events.sinks import JsonlSink
from reidd.events.spool import Spool
from reidd.runtime import ReidRuntime
from reidd.telemetry import Metrics, MetricsServer

from support import ROOT, RedisProc, polled


STREAM = "ev:faults"


# ---------------------------------------------------------------------------------------------- disks
class TmpfsDisk:
    """A ``size`` tmpfs mounted in a private mount namespace; ``root`` is its folder as seen from here."""

    mode = "tmpfs"

    def __init__(self, mountpoint: Path, size: str = "1m"):
        mountpoint.mkdir(parents=True, exist_ok=True)
        script = f"mount -t tmpfs -o size={size},mode=0777 reidd-test {mountpoint} && echo mounted && exec sleep 3600"
        private = ["--mount", "--propagation", "private"]
        # as root: a mount namespace is enough; else (or where root may not mount) a user namespace too
        variants = ([["unshare", *private]] if os.geteuid() == 0 else []) + [
            ["unshare", "--user", "--map-root-user", *private]]
        errors = []
        for prefix in variants:
            self.proc = subprocess.Popen([*prefix, "sh", "-c", script], stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            if self.proc.stdout.readline().strip() == "mounted":
                self.root = Path(f"/proc/{self.proc.pid}/root") / mountpoint.relative_to("/")
                try:
                    os.statvfs(self.root)
                    os.listdir(self.root)
                except OSError as exc:  # the namespace is not reachable from here
                    errors.append(f"{' '.join(prefix)}: {exc}")
                    self.close()
                    continue
                self.filler = self.root / "filler"
                return
            errors.append(f"{' '.join(prefix)}: {self.proc.stderr.read().strip() or 'no output'}")
            self.close()
        raise OSError("cannot mount a tmpfs in a private namespace (" + "; ".join(errors) + ")")

    def prepare_spool(self, spool_dir: Path) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)

    def prepare_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)

    def fill(self) -> None:
        """Take every free block: the next write that needs one gets ENOSPC."""
        with open(self.filler, "ab", buffering=0) as fh:
            chunk = b"\0" * 65536
            while True:
                try:
                    fh.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    if len(chunk) == 1:
                        break
                    chunk = chunk[: len(chunk) // 16 or 1]

    def free(self) -> None:
        self.filler.unlink()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if not stream.closed:
                stream.close()


class DevFullDisk:
    """No mount possible: the file the spool (or JSONL sink) writes is a symlink to /dev/full from the start,
    so only the "full" part of the story can happen before ``free()`` puts a regular file in its place."""

    mode = "devfull"

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._links: list[Path] = []

    def prepare_spool(self, spool_dir: Path) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.prepare_file(spool_dir / "000000000001.seg")  # the spool's first segment

    def prepare_file(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to("/dev/full")
        self._links.append(path)

    def fill(self) -> None:  # full from the start
        pass

    def free(self) -> None:
        for link in self._links:
            tmp = link.with_name(link.name + ".new")
            tmp.write_bytes(b"")
            os.replace(tmp, link)
        self._links.clear()

    def close(self) -> None:
        pass


def _oom(reason: str) -> bool:
    """Redis refusing writes at maxmemory: redis-py says OutOfMemoryError, or, when the refusal comes from inside
    the already-loaded Lua script, a ResponseError carrying the server's '-OOM command not allowed'."""
    return "OutOfMemoryError" in reason or "OOM command not allowed" in reason


@pytest.fixture(params=["tmpfs", "devfull"])
def disk(request, tmp_path: Path):
    if request.param == "tmpfs":
        if not shutil.which("unshare"):
            pytest.skip("unshare(1) is not installed: the /dev/full variant of this test covers it")
        try:
            d = TmpfsDisk(tmp_path / "mnt")
        except OSError as exc:
            pytest.skip(f"{exc}: the /dev/full variant of this test covers it")
    else:
        d = DevFullDisk(tmp_path / "plain")
    yield d
    d.close()


# ---------------------------------------------------------------------------------------------- helpers
def _event(i: int):
    return tracklet_event(
        camera_id="c1", local_id=i, tracklet_id=f"c1:{i}:0", global_id=100 + i, first_frame=10 * i,
        last_frame=10 * i + 9, first_ts=i * 0.4, last_ts=i * 0.4 + 0.36, live=False,
        box_summary={"first_xyxy": [1.0, 2.0, 30.0, 40.0], "mean_area": 812.5}, best_crop=None, cls=2,
        num_boxes=10, daemon_id="faults",
    )



def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _readyz(server: MetricsServer) -> tuple[int, dict]:
    code, body = _get(f"http://127.0.0.1:{server.port}/readyz")
    return code, json.loads(body)


def _scrape(server: MetricsServer) -> dict[str, float]:
    code, body = _get(server.url)
    assert code == 200
    return {s.name: s.value for fam in text_string_to_metric_families(body.decode()) for s in fam.samples
            if not s.labels}


def _runtime(tmp_path: Path, redis_url: str, spool_dir: Path) -> ReidRuntime:
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(
        "cameras:\n  - id: c1\n    url: cam.mp4\ndetector: {type: motion}\n"
        f"gallery: {{redis_url: '{redis_url}'}}\n"
        f"events: {{spool_dir: '{spool_dir}', stream: '{STREAM}'}}\n"
        "metrics: {enabled: false}\n", encoding="utf-8")
    # embedding_dim: tracklets would arrive embedded, so no model is loaded; the sinks are the real ones
    runtime = ReidRuntime(load_config(cfg, check_files=False), RunContext.for_replay(), metrics=Metrics(),
                          embedding_dim=8)
    runtime.publish_grace_s = 1.0
    return runtime


def _log_problems(records: list[logging.LogRecord]) -> list[str]:
    """Tracebacks or parse errors among the log records."""
    bad = []
    for r in records:
        text = r.getMessage()
        if r.exc_info or "Traceback" in text or "struct.error" in text or "unpack" in text:
            bad.append(f"{r.name}: {text}")
    return bad


def _segment_bytes_on_disk(spool_dir: Path) -> int:
    return sum(p.stat().st_size for p in spool_dir.glob("*.seg"))


# ---------------------------------------------------------------------------------------------- tests
def test_full_disk_refuses_once_readiness_503_then_recovers_without_loss(disk, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO)
    srv = RedisProc(tmp_path / "redis").start()
    spool_dir = disk.root / "spool"
    disk.prepare_spool(spool_dir)
    runtime = _runtime(tmp_path, srv.url, spool_dir)
    sink = runtime.stream_sink
    server = MetricsServer(runtime.metrics, "127.0.0.1", 0, readiness=runtime.ready).start()
    published: list = []

    def publish(ids, pause: float = 0.0) -> None:
        for i in ids:
            ev = _event(i)
            runtime.sink.publish(ev)
            published.append(ev)
            if pause:
                time.sleep(pause)

    def settled() -> bool:  # every event the sink took from its queue was spooled, delivered or refused
        return sink._q.unfinished_tasks == 0

    try:
        publish(range(0, 10))
        assert sink.flush(10)
        code, ready = _readyz(server)
        assert code == 200 and ready["events"]["state"] == "ok", ready

        srv.stop()  # Redis down: events go to the spool
        if disk.mode == "tmpfs":  # room on the disk at first: degraded, but ready, nothing lost
            publish(range(10, 30))
            assert polled(lambda: sink.spool_depth == 20)
            code, ready = _readyz(server)
            assert code == 200 and ready["redis"] is False, ready
            assert ready["events"]["state"] == "degraded" and "spool" in ready["events"]["reason"], ready
            assert ready["spool_depth"] == 20
        disk.fill()
        spooled_before = sink.spooled

        # disk full and Redis down: events are refused, for several seconds, in many batches
        publish(range(100, 160), pause=0.05)
        assert polled(settled)
        assert sink.refused > 0, "nothing was refused on a full disk"
        code, ready = _readyz(server)
        assert code == 503 and ready["ready"] is False, ready
        ev = ready["events"]
        assert ev["state"] == "failing" and ev["spool_accepting"] is False, ready
        assert "disk full" in ev["reason"] and "ENOSPC" in ev["reason"] and str(spool_dir) in ev["reason"], ev
        assert "Redis" in ev["reason"]
        assert ev["refused"] == sink.refused
        # one source of truth: the gauge, readiness and the spool say the same depth; the counter the refusals
        scraped = _scrape(server)
        assert scraped["reidd_event_spool_depth"] == ready["spool_depth"] == sink.spool_depth
        assert scraped["reidd_events_refused_total"] == sink.refused
        accepted_while_full = sink.spooled - spooled_before
        assert sink.spool_depth == (20 if disk.mode == "tmpfs" else 0) + accepted_while_full
        assert sink.refused == 60 - accepted_while_full
        # nothing torn left behind: the segment files hold exactly the records the spool counts
        if disk.mode == "tmpfs":
            assert _segment_bytes_on_disk(spool_dir) == sink._spool.disk_bytes
        full_lines = [r for r in caplog.records if "disk full" in r.getMessage()]
        assert len(full_lines) == 1, [r.getMessage() for r in full_lines]
        assert str(spool_dir) in full_lines[0].getMessage() and "ENOSPC" in full_lines[0].getMessage()
        assert full_lines[0].levelno == logging.ERROR
        assert "536870912" not in caplog.text  # the old, wrong "spool is full (512 MiB)" story
        assert not _log_problems(caplog.records), _log_problems(caplog.records)
        # no refusal for a while, still full and Redis still down: still not ready, and says why
        time.sleep(runtime.publish_grace_s + 0.1)
        code, ready = _readyz(server)
        assert code == 503 and ready["events"]["reason"].startswith("events are being lost"), ready
        assert "Redis does not answer PING" in ready["events"]["reason"] and "ENOSPC" in ready["events"]["reason"]

        # space returns: the next write succeeds, said once; readiness degraded (Redis still down) but ready
        disk.free()
        refused = sink.refused
        publish(range(200, 220))
        assert polled(settled)
        assert sink.refused == refused, "events refused after the disk had room again"
        again = [r for r in caplog.records if "writable again" in r.getMessage()]
        assert len(again) == 1 and str(spool_dir) in again[0].getMessage(), [r.getMessage() for r in again]
        time.sleep(runtime.publish_grace_s)
        code, ready = _readyz(server)
        assert code == 200 and ready["events"]["state"] == "degraded" and ready["events"]["spool_accepting"], ready
        assert _scrape(server)["reidd_event_spool_depth"] == ready["spool_depth"] == sink.spool_depth

        # Redis returns: everything accepted arrives, in order, once; the refused ones are exactly the missing
        srv.start()
        assert sink.flush(20), f"{sink.spool_depth} events still in the spool"
        assert polled(lambda: _readyz(server)[0] == 200 and _readyz(server)[1]["events"]["state"] == "ok")
        client = redis.Redis.from_url(srv.url)
        got = [fields[b"data"].decode() for _id, fields in client.xrange(STREAM)]
        client.close()
        want = [event_to_json(e) for e in published]
        assert len(got) == len(set(got)), "duplicated events"
        position = {data: k for k, data in enumerate(want)}
        assert all(d in position for d in got)
        assert [position[d] for d in got] == sorted(position[d] for d in got), "events out of order"
        assert len(got) == len(want) - sink.refused, "accepted events were lost"
        kept = set(got)
        for i in [*range(0, 10), *range(200, 220), *(range(10, 30) if disk.mode == "tmpfs" else [])]:
            assert event_to_json(_event(i)) in kept, i
        assert _scrape(server)["reidd_event_spool_depth"] == 0
        assert not _log_problems(caplog.records), _log_problems(caplog.records)
    finally:
        server.stop()
        runtime.close()
        srv.stop()


def test_redis_rejecting_writes_with_spool_full_is_not_ready(disk, tmp_path: Path, caplog):
    """Redis answers PING but refuses every write (OOM): degraded while the spool keeps the events,
    503 once the spool cannot keep them either; both with the reason."""
    caplog.set_level(logging.INFO)
    srv = RedisProc(tmp_path / "redis").start()
    spool_dir = disk.root / "spool"
    disk.prepare_spool(spool_dir)
    runtime = _runtime(tmp_path, srv.url, spool_dir)
    sink = runtime.stream_sink
    server = MetricsServer(runtime.metrics, "127.0.0.1", 0, readiness=runtime.ready).start()
    admin = redis.Redis.from_url(srv.url)
    try:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)  # every write: "OOM command not allowed"
        if disk.mode == "tmpfs":
            for i in range(5):
                runtime.sink.publish(_event(i))
            assert polled(lambda: sink.spool_depth == 5)
            time.sleep(runtime.publish_grace_s + 0.1)
            code, ready = _readyz(server)
            assert code == 200 and ready["redis"] is True and ready["events"]["state"] == "degraded", ready
            assert _oom(ready["events"]["reason"]) and "failed for" in ready["events"]["reason"], ready
            disk.fill()
        for i in range(10, 20):
            runtime.sink.publish(_event(i))
            time.sleep(0.02)
        assert polled(lambda: sink._q.unfinished_tasks == 0 and sink.refused > 0)
        code, ready = _readyz(server)
        assert code == 503 and ready["redis"] is True, ready
        assert "disk full" in ready["events"]["reason"] and _oom(ready["events"]["reason"]), ready
        assert _scrape(server)["reidd_event_spool_depth"] == ready["spool_depth"] == sink.spool_depth
        assert not _log_problems(caplog.records)
        disk.free()
        admin.config_set("maxmemory", 0)
        runtime.sink.publish(_event(30))
        assert sink.flush(20)
        assert polled(lambda: _readyz(server)[0] == 200 and _readyz(server)[1]["events"]["state"] == "ok")
        n = admin.xlen(STREAM)
        assert n == (5 if disk.mode == "tmpfs" else 0) + 10 - sink.refused + 1
    finally:
        admin.close()
        server.stop()
        runtime.close()
        srv.stop()


def test_jsonl_sink_on_full_disk_logs_once_and_leaves_no_half_line(disk, tmp_path: Path, caplog):
    caplog.set_level(logging.INFO)
    path = disk.root / "out" / "events.jsonl"
    disk.prepare_file(path)
    sink = JsonlSink(path, check_every_s=0.0)
    try:
        if disk.mode == "tmpfs":
            for i in range(5):
                sink.publish(_event(i))
            disk.fill()
        for i in range(10, 60):
            sink.publish(_event(i))
        assert sink.publish_failures > 0
        failed = [r for r in caplog.records if "could not write" in r.getMessage()]
        assert len(failed) == 1 and "ENOSPC" in failed[0].getMessage(), [r.getMessage() for r in failed]
        if disk.mode == "tmpfs":  # every line there is whole
            for line in path.read_text().splitlines():
                json.loads(line)
        disk.free()
        sink.publish(_event(99))
        assert sum("writable again" in r.getMessage() for r in caplog.records) == 1
    finally:
        sink.close()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[-1]["local_id"] == 99 and len(lines) == sink.published
    assert not _log_problems(caplog.records)


_SHORT_WRITE = textwrap.dedent("""
    import json, logging, resource, signal, sys
    sys.path.insert(0, sys.argv[1])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    from reidd.events.spool import Spool
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit: EFBIG, after a short write
    sp = Spool(sys.argv[2], max_bytes=10**8)
    recs = [bytes([65 + i % 26]) * 1000 for i in range(20)]
    resource.setrlimit(resource.RLIMIT_FSIZE, (5500, resource.RLIM_INFINITY))
    n = sp.append_many(recs)             # 5 records of 1008 bytes fit; the 6th is cut after 460 bytes
    on_disk = sum(p.stat().st_size for p in sp.directory.glob("*.seg"))  # before anything else touches it
    again = sp.append_many(recs[n:])     # still refused: one state, logged once
    state = {"n": n, "on_disk": on_disk, "again": again, "depth": len(sp), "disk_bytes": sp.disk_bytes,
             "errno": sp.write_error.errno if sp.write_error else None, "peek": len(sp.peek(100))}
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    state["after"] = sp.append_many(recs[n:])
    state["writable"] = sp.writable
    sp.close()
    print(json.dumps(state), flush=True)
""")


def test_short_write_leaves_no_torn_record(tmp_path: Path):
    """A real short write (RLIMIT_FSIZE: the kernel writes part of the buffer, then EFBIG): the spool
    keeps the whole records, cuts the partial one off the file, logs the state once, and recovers."""
    spool_dir = tmp_path / "spool"
    proc = subprocess.run([sys.executable, "-c", _SHORT_WRITE, str(ROOT), str(spool_dir)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert state["n"] == 5 and state["again"] == 0 and state["depth"] == 5 and state["peek"] == 5, state
    assert state["disk_bytes"] == state["on_disk"] == 5 * 1008 and state["errno"] == errno.EFBIG, state
    assert state["after"] == 15 and state["writable"] is True, state
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "EFBIG" in errors[0] and str(spool_dir) in errors[0], proc.stderr
    assert "refused" in errors[0]
    assert sum("writable again" in line for line in proc.stderr.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    # reopened: nothing torn on disk, the 20 records in order
    sp = Spool(spool_dir)
    try:
        assert sp.torn_records == 0 and len(sp) == 20
        assert sp.peek(100) == [bytes([65 + i % 26]) * 1000 for i in range(20)]
    finally:
        sp.close()
