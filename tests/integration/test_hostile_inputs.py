"""Hostile files and streams given to the real commands (`reidd rematch`, `reidd eval-mtmc`, `reidd events tail`)
in a subprocess: a bad input is one line naming file:line and what is wrong, exit 2, no traceback and nothing
written; stream text never reaches the terminal raw."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from reidd.match.recording import EmbeddingLog
from support import ROOT
from support.samples import CHAIN_DIM, chain_scene


def _reidd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reidd", *args], capture_output=True, cwd=ROOT, timeout=timeout)


# ---------------------------------------------------------------------------------------------- rematch
@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config of three file cameras and a log of their embedded tracklets and ticks, as a replay writes it."""
    d = tmp_path_factory.mktemp("rematch")
    items, _ = chain_scene(4, n=8, distractors=3)
    log = EmbeddingLog(d / "good.jsonl", CHAIN_DIM)
    for e in sorted(items, key=lambda e: e.tracklet.last_ts):
        log.query(e)
        log.tick(e.tracklet.last_ts)
    log.close()
    cams = []
    for c in ("c1", "c2", "c3"):
        w = cv2.VideoWriter(str(d / f"{c}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
        for _ in range(5):
            w.write(np.zeros((48, 64, 3), np.uint8))
        w.release()
        cams.append({"id": c, "url": f"{c}.mp4"})
    (d / "cameras.yaml").write_text(yaml.safe_dump({"cameras": cams, "matching": {"window_s": 120}}))
    return d


def _rematch(d: Path, log: Path, out: Path) -> subprocess.CompletedProcess:
    return _reidd("rematch", "--config", str(d / "cameras.yaml"), "--embeddings", str(log), "--out", str(out),
                  "--output-mtmc", str(out / "mtmc.txt"), "--events-jsonl", str(out / "events.jsonl"))


def _b64(v) -> str:
    return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()


def _edit_query(line: str, edit) -> str:
    obj = json.loads(line)
    edit(obj["q"])
    return json.dumps(obj)


def _bad_logs(lines: list[str]) -> dict[str, tuple[bytes, int, str]]:
    """name: (file bytes, bad line number, text the error must hold); the bad line is near the end."""
    at = len(lines) - 3
    q = next(i for i in range(at, 0, -1) if lines[i].startswith('{"q"'))

    def replaced(edit) -> bytes:
        body = list(lines)
        body[at] = _edit_query(lines[q], edit)
        return ("\n".join(body) + "\n").encode()

    return {
        "binary file": (b"\x89PNG\r\n\x1a\n\x00\xff" * 100, 1, "not UTF-8 text"),
        "binary tail": (("\n".join(lines[:at]) + "\n").encode() + b"\xff\xfe\x00\x01\n" + b"x" * 10, at + 1,
                        "not UTF-8 text (byte 0xff at column 1)"),
        "zero vector": (replaced(lambda r: r.update(emb=_b64(np.zeros(CHAIN_DIM)))), at + 1, "q.emb: norm 0"),
        "denormal vector": (replaced(lambda r: r.update(emb=_b64(np.full(CHAIN_DIM, 1e-41)))), at + 1,
                            "is zero or too small to normalise"),
        "NaN box": (replaced(lambda r: r["boxes"][0].__setitem__(2, float("nan"))), at + 1,
                    "q.boxes[0][2] (x1): must be finite"),
        "time past datetime": (replaced(lambda r: r["boxes"][-1].__setitem__(1, 1e15)), at + 1,
                               "q.boxes[5][1] (ts): must be in"),
    }


def test_rematch_refuses_a_bad_log_before_writing_anything(recorded: Path, tmp_path: Path) -> None:
    lines = (recorded / "good.jsonl").read_text().splitlines()
    for name, (data, line_no, expect) in _bad_logs(lines).items():
        log = tmp_path / f"{name.replace(' ', '-')}.jsonl"
        log.write_bytes(data)
        out = tmp_path / "out" / name.replace(" ", "-")
        r = _rematch(recorded, log, out)
        err = r.stderr.decode()
        assert r.returncode == 2, (name, r.returncode, err[-1500:])
        assert "Traceback" not in err, (name, err[-1500:])
        assert f"reidd rematch: {log}:{line_no}: " in err and expect in err, (name, err[-1500:])
        assert not out.exists(), (name, sorted(p.name for p in out.rglob("*")))  # no state, events or MTMC file


def test_rematch_skips_a_cut_last_line_and_normalises_any_scale(recorded: Path, tmp_path: Path) -> None:
    text = (recorded / "good.jsonl").read_text()
    ref = _rematch(recorded, recorded / "good.jsonl", tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr.decode()[-2000:]
    expected = (tmp_path / "ref" / "mtmc.txt").read_text()
    assert expected.strip()
    # a crash in the middle of a write: the last line is cut short, without its newline
    last_q = next(line for line in reversed(text.splitlines()) if line.startswith('{"q"'))
    cut = tmp_path / "cut.jsonl"
    cut.write_text(text + last_q[: len(last_q) // 2])
    r = _rematch(recorded, cut, tmp_path / "cut")
    err = r.stderr.decode()
    assert r.returncode == 0, err[-2000:]
    assert "WARNING" in err and f"{cut}:{text.count(chr(10)) + 1}:" in err, err[-2000:]
    assert (tmp_path / "cut" / "mtmc.txt").read_text() == expected
    # vectors far from unit length (float32 squares would overflow) decide as their unit versions do
    scaled = []
    for line in text.splitlines():
        if line.startswith('{"q"'):
            line = _edit_query(line, lambda q: q.update(
                emb=_b64(np.frombuffer(base64.b64decode(q["emb"]), "<f4") * np.float32(2e37))))
        scaled.append(line)
    big = tmp_path / "big.jsonl"
    big.write_text("\n".join(scaled) + "\n")
    r = _rematch(recorded, big, tmp_path / "big")
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert (tmp_path / "big" / "mtmc.txt").read_text() == expected


# ---------------------------------------------------------------------------------------------- eval-mtmc
@pytest.mark.parametrize(("pred", "line_no", "expect"), [
    (b"c001 1 1 10 10 20 20 -1 -1\nc001 99999999999999999999 2 10 10 20 20 -1 -1\n", 2, "obj_id must be in"),
    (b"c001 1 1 10 10 20 20 -1 -1\nc001 -99999999999999999999 2 10 10 20 20 -1 -1\n", 2, "obj_id must be in"),
    (b"c001 1 99999999999999999999 10 10 20 20 -1 -1\n", 1, "frame_id must be in"),
    (b"c001 1 1 10 10 20 20 -1 -1\n\xff\xfe\x00junk\n", 2, "not UTF-8 text (byte 0xff at column 1)"),
])
def test_eval_mtmc_names_file_and_line(tmp_path: Path, pred: bytes, line_no: int, expect: str) -> None:
    gt = tmp_path / "gt.txt"
    gt.write_text("c001 1 1 10 10 20 20 -1 -1\nc001 2 2 10 10 20 20 -1 -1\n")
    bad = tmp_path / "pred.txt"
    bad.write_bytes(pred)
    r = _reidd("eval-mtmc", "--gt", str(gt), "--pred", str(bad), timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err, err[-1500:]
    assert f"{bad}:{line_no}: " in err and expect in err, err


def test_eval_mtmc_reads_large_ids_exactly(tmp_path: Path) -> None:
    """Ids up to 2**53 - 1 are read exactly and scored as distinct vehicles; 2**53 (where floats, as motmetrics
    holds ids, stop telling neighbours apart: IDF1 150 % before) is refused naming its line."""
    gt = tmp_path / "gt.txt"
    gt.write_text("c001 9007199254740991 1 10 10 20 20 -1 -1\nc001 9007199254740990 1 50 50 20 20 -1 -1\n")
    r = _reidd("eval-mtmc", "--gt", str(gt), "--pred", str(gt), timeout=120)
    assert r.returncode == 0, r.stderr.decode()[-1500:]
    out = r.stdout.decode()
    assert "GT identities               2" in out and "IDF1                        100.00%" in out, out
    gt.write_text("c001 9007199254740993 1 10 10 20 20 -1 -1\nc001 9007199254740992 1 50 50 20 20 -1 -1\n")
    r = _reidd("eval-mtmc", "--gt", str(gt), "--pred", str(gt), timeout=120)
    err = r.stderr.decode()
    assert r.returncode == 2 and f"{gt}:1: obj_id must be in" in err and "Traceback" not in err, err[-1500:]


# ---------------------------------------------------------------------------------------------- events tail
EVIL = "\x1b]0;owned\x07\x1b[2J\x9b31m\x7f\r\u202eevil\u2066\x00"
FORBIDDEN = (set(range(0x20)) - {0x0A}) | set(range(0x7F, 0xA0)) | {0x202E, 0x2066}


def _forbidden(out: bytes) -> list[str]:
    text = out.decode("utf-8")  # strict: no lone surrogate or broken byte either
    return sorted({f"U+{ord(c):04X}" for c in text if ord(c) in FORBIDDEN})


def test_events_tail_escapes_stream_text(redis_proc) -> None:
    import redis

    client = redis.Redis.from_url(redis_proc.url)
    tracklet = {"type": "tracklet", "time": EVIL, "tracklet_id": EVIL, "camera_id": EVIL, "global_id": 1,
                "first_frame": 0, "last_frame": 4, "num_boxes": 5, "cls": 2}
    match = {"type": "match", "time": "1970-01-01T00:00:10.000000Z", "query": {"tracklet_id": EVIL, "camera_id": "c2"},
             "gallery": {"tracklet_id": "c1:1:0", "camera_id": EVIL}, "global_id": 1, "similarity": 0.9,
             "transit_s": 3.0}
    entries = [
        {"type": "tracklet", "data": json.dumps(tracklet, ensure_ascii=False)},
        {"type": "match", "data": json.dumps(match, ensure_ascii=False)},
        {"type": "tracklet", "data": '{"type": "tracklet", "camera_id": "\\ud800\\u001b]0;x\\u0007"}'},
        {"type": "tracklet", "data": b"\x1b]0;raw\x07 not json \x9b\xff"},
    ]
    for fields in entries:
        client.xadd("ev", fields)
    client.close()
    base = ["events", "tail", "--redis-url", redis_proc.url, "--stream", "ev", "--from-start", "--timeout", "1"]
    human = _reidd(*base, timeout=60)
    assert human.returncode == 0, human.stderr.decode()[-1500:]
    assert _forbidden(human.stdout) == [] and _forbidden(human.stderr) == [], human.stdout
    lines = human.stdout.decode().splitlines()
    assert len(lines) == 4 and "\\x1b]0;owned\\x07" in lines[0] and "\\u202e" in lines[1], lines
    raw = _reidd(*base, "--json", timeout=60)
    assert raw.returncode == 0, raw.stderr.decode()[-1500:]
    assert _forbidden(raw.stdout) == [] and _forbidden(raw.stderr) == [], raw.stdout
    got = [json.loads(line) for line in raw.stdout.decode().splitlines()]  # every line valid JSON
    assert got == [tracklet, match, json.loads(entries[2]["data"])]  # the same values, escaped
    assert "not JSON" in raw.stderr.decode()
