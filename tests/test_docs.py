"""docs/: the generated configuration reference is current and complete, the events subscriber example
runs against a real redis-server, documented commands parse, and every link resolves."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from pydantic import BaseModel

from reidd import docgen
from reidd.config import Config
from reidd.events.schema import SCHEMA_PATH, event_to_json, match_event, tracklet_event
from reidd.events.sinks import RedisStreamSink, redis_client_factory

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


# --------------------------------------------------------------------------- configuration.md
def test_configuration_reference_is_current() -> None:
    assert (DOCS / "configuration.md").read_text(encoding="utf-8") == docgen.generate_markdown(), (
        "docs/configuration.md is stale: run `python -m reidd.docgen --out docs/configuration.md`")


def _fields(model: type[BaseModel], path: str) -> list[tuple[str, str]]:
    """(section path, field name) of every field, nested models and lists of models included."""
    out = []
    for name, info in model.model_fields.items():
        out.append((path, name))
        sub, is_list = docgen._model_of(info.annotation)
        if sub is not None:
            out += _fields(sub, (f"{path}.{name}" if path else name) + ("[]" if is_list else ""))
    return out


def test_configuration_reference_lists_every_field_with_its_default() -> None:
    text = docgen.generate_markdown()
    sections = {"": text.split("## `", 1)[0]}
    for m in re.finditer(r"^#{2,4} `([^`]+)`\n(.*?)(?=^#{2,4} |\Z)", text, re.M | re.S):
        sections[m.group(1)] = m.group(2)
    for path, name in _fields(Config, ""):
        assert path in sections, f"no section for {path}"
        assert re.search(rf"^\| `{re.escape(name)}` \|", sections[path], re.M), f"{path}.{name} not documented"
    row = re.search(r"^\| `port` \|(.*)$", sections["metrics"], re.M).group(1)
    assert "`9108`" in row and "<= 65535" in row
    row = re.search(r"^\| `url` \|(.*)$", sections["cameras[]"], re.M).group(1)
    assert "**required**" in row


def test_docgen_check_mode(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    current = tmp_path / "configuration.md"
    assert docgen.main(["--out", str(current)]) == 0
    assert docgen.main(["--check", str(current)]) == 0
    current.write_text(current.read_text().replace("NMS IoU threshold", "NMS threshold"))
    assert docgen.main(["--check", str(current)]) == 1
    assert "is stale" in capsys.readouterr().err
    assert docgen.main(["--check", str(tmp_path / "missing.md")]) == 2


# --------------------------------------------------------------------------- events.md
def _example(doc: Path, name: str) -> str:
    text = doc.read_text(encoding="utf-8")
    m = re.search(rf"<!-- example: {name} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"{doc}: no example '{name}'"
    return m.group(1)


def test_events_doc_covers_every_schema_field() -> None:
    text = (DOCS / "events.md").read_text(encoding="utf-8")
    schema = json.loads(SCHEMA_PATH.read_text())
    names = set(schema["properties"]) | set(schema["$defs"]["tracklet"]["properties"])
    names |= set(schema["$defs"]["match"]["properties"])
    for name in names:
        assert re.search(rf"^\| `{name}`", text, re.M) or f"`{name}`" in text.split("| field |", 1)[1], name
    assert f"`{schema['properties']['schema_version']['const']}`" in text


def _events() -> list:
    t1 = tracklet_event(camera_id="gate-north", local_id=4, tracklet_id="gate-north:4:0", global_id=17,
                        first_frame=100, last_frame=160, first_ts=1_700_000_000.0, last_ts=1_700_000_006.0,
                        live=True, box_summary={"largest": [10.0, 20.0, 110.0, 90.0], "largest_frame": 130},
                        best_crop=None, cls=2, num_boxes=61, daemon_id="worker-a")
    m = match_event(query={"tracklet_id": "gate-south:9:0", "camera_id": "gate-south",
                           "first_ts": 1_700_000_030.5, "last_ts": 1_700_000_034.0},
                    gallery={"tracklet_id": "gate-north:4:0", "camera_id": "gate-north",
                             "first_ts": 1_700_000_000.0, "last_ts": 1_700_000_006.0},
                    similarity=0.8123, transit_s=24.5, global_id=17, daemon_id="worker-b")
    t2 = tracklet_event(camera_id="gate-south", local_id=9, tracklet_id="gate-south:9:0", global_id=17,
                        first_frame=5, last_frame=40, first_ts=1_700_000_030.5, last_ts=1_700_000_034.0,
                        live=True, box_summary={}, best_crop=None, cls=2, num_boxes=36, daemon_id="worker-b")
    t3 = tracklet_event(camera_id="gate-east", local_id=1, tracklet_id="gate-east:1:0", global_id=18,
                        first_frame=0, last_frame=9, first_ts=1_700_000_040.0, last_ts=1_700_000_041.0,
                        live=True, box_summary={}, best_crop=None, cls=7, num_boxes=10, daemon_id="worker-b")
    return [t1, m, t2, t3]


class _Subscriber:
    """The doc's example as a process; lines of its output are collected by a reader thread."""

    def __init__(self, script: Path, url: str):
        self.proc = subprocess.Popen([sys.executable, str(script), url, "worker-1"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_lines(self, n: int, timeout: float = 30.0) -> list[str]:
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.lines) >= n or self.proc.poll() is not None, timeout)
        assert ok and len(self.lines) >= n, (self.lines, self.proc.poll(), self.proc.stderr.read()
                                             if self.proc.poll() is not None else "")
        return self.lines

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def _wait_acked(r: redis.Redis, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while r.xpending("reidd:events", "my-app")["pending"]:
        assert time.monotonic() < deadline, "the subscriber did not acknowledge its entries"
        time.sleep(0.05)


def test_events_doc_subscriber_example_runs_against_real_redis(redis_proc, tmp_path: Path) -> None:
    script = tmp_path / "subscriber.py"
    script.write_text(_example(DOCS / "events.md", "subscriber"), encoding="utf-8")
    sink = RedisStreamSink(redis_client_factory(redis_proc.url), "reidd:events", spool_dir=tmp_path / "spool")
    r = redis.Redis.from_url(redis_proc.url, decode_responses=True)
    t1, m, t2, t3 = _events()
    try:
        sink.publish(t1)  # before the group exists: the example's group starts at the stream's beginning
        assert sink.flush(10)
        sub = _Subscriber(script, redis_proc.url)
        try:
            first = sub.wait_lines(1)[0]
            assert "vehicle 17 seen by gate-north" in first and t1.payload["time"] in first
            sink.publish(m)
            assert sink.flush(10)
            second = sub.wait_lines(2)[1]
            assert "vehicle 17: gate-north -> gate-south" in second and "24.5 s" in second and "0.81" in second
            _wait_acked(r)  # both acknowledged (handled first, then XACKed)
        finally:
            sub.stop()
        # a crash after delivery, before XACK: the entry stays pending for worker-1 ...
        sink.publish(t2)
        assert sink.flush(10)
        claimed = r.xreadgroup("my-app", "worker-1", {"reidd:events": ">"}, count=1)
        assert json.loads(claimed[0][1][0][1]["data"])["event_id"] == t2.event_id
        sink.publish(t3)
        assert sink.flush(10)
        # ... and the restarted subscriber handles it first, then the new one, and nothing twice
        sub = _Subscriber(script, redis_proc.url)
        try:
            lines = sub.wait_lines(2)
            assert "vehicle 17 seen by gate-south" in lines[0] and "vehicle 18 seen by gate-east" in lines[1]
            _wait_acked(r)
        finally:
            sub.stop()
        assert len(sub.lines) == 2
        assert [json.loads(f["data"]) for _, f in r.xrange("reidd:events")] == [
            json.loads(event_to_json(e)) for e in (t1, m, t2, t3)]
    finally:
        sink.close()
        r.close()


# --------------------------------------------------------------------------- commands and links
def _parser() -> argparse.ArgumentParser:
    """The reidd CLI with the train/eval/export and report commands (registered here if the CLI lacks them)."""
    from reidd import cli, report
    from reidd.evaluate import cli as eval_cli
    from reidd.train import cli as train_cli

    p = cli.build_parser()
    actions = p._subparsers._group_actions  # type: ignore[union-attr]
    sub = next(a for a in actions if isinstance(a, argparse._SubParsersAction))
    if "report" not in sub.choices:
        report.register(sub)
    if "train" not in sub.choices:
        train_cli.register(sub)
    if "eval" not in sub.choices:
        eval_cli.register(sub)
    return p


def test_documented_commands_parse() -> None:
    parser = _parser()
    commands = []
    for doc in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("  #", 1)[0].strip()
                if line.startswith("reidd "):
                    commands.append((doc.name, line))
    assert len(commands) >= 8
    for name, line in commands:
        try:
            args = parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{line}` does not parse")
        assert callable(args.func)


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_in_docs_resolve() -> None:
    checked = 0
    for doc in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            assert dest.exists(), f"{doc.name}: broken link {target}"
            if anchor:
                heads = re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)
                assert anchor in {_slug(h.replace("`", "")) for h in heads}, f"{doc.name}: no anchor {target}"
            checked += 1
    assert checked >= 20
    for name in ("architecture.md", "configuration.md", "events.md", "operations.md", "training.md"):
        assert (DOCS / name).is_file(), name
