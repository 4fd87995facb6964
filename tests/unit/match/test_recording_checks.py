"""reidd/match/recording.py reads a hostile embeddings log: every bad line is refused naming its file, line and
field; a last line cut short by a crash is skipped with a warning; vectors are normalised without overflow."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from reidd.match.recording import EmbeddingLog, RecordingError, read_embedding_log
from reidd.reid.colour import SIGNATURE_LEN
from reidd.types import BoxRecord, Tracklet, TrackletEmbedding

DIM = 8
MIN_NORM = 1e-6  # the documented smallest norm


def _b64(values) -> str:
    return base64.b64encode(np.asarray(values, "<f4").tobytes()).decode()


def _embedded(cam: str, lid: int, t0: float, vec) -> TrackletEmbedding:
    boxes = [BoxRecord(int(t * 10), t, (10.0, 20.0, 70.0, 60.0), 0.8, 2) for t in (t0, t0 + 0.5, t0 + 1.0)]
    return TrackletEmbedding(Tracklet(cam, lid, 0, boxes, [], "lost", 2), np.asarray(vec, np.float32), 3,
                             np.full(SIGNATURE_LEN, 1 / SIGNATURE_LEN, np.float32))


def _good_log(path: Path) -> list[str]:
    """A log as a replay writes it (header, queries, ticks); returns its lines."""
    rng = np.random.default_rng(3)
    log = EmbeddingLog(path, DIM)
    for i, cam in enumerate(("c1", "c2", "c1")):
        v = rng.normal(size=DIM)
        log.query(_embedded(cam, i + 1, 10.0 * i, v / np.linalg.norm(v)))
        log.tick(10.0 * i + 2)
    log.close()
    return path.read_text().splitlines()


def _query_line(**change) -> str:
    """The first query of a good log with fields of its "q" record replaced (a callable edits it in place)."""
    rec = {"cam": "c1", "lid": 7, "seg": 0, "reason": "lost", "cls": 2,
           "boxes": [[5, 0.5, 10.0, 20.0, 70.0, 60.0, 0.8, 2]], "emb": _b64(np.eye(DIM)[0]), "crops": 3,
           "colour": None}
    for k, v in change.items():
        if callable(v):
            v(rec)
        else:
            rec[k] = v
    return json.dumps({"q": rec})


def _pop(key: str):
    return lambda rec: rec.pop(key)


BAD_LINES = [
    # (name, line 3 of the log, text the error must hold)
    ("zero vector", _query_line(emb=_b64(np.zeros(DIM))), "q.emb: norm 0 is zero or too small"),
    ("denormal vector", _query_line(emb=_b64(np.full(DIM, 1e-40))), "q.emb: norm"),
    ("tiny vector", _query_line(emb=_b64(np.full(DIM, MIN_NORM / 10))), "minimum 1e-06"),
    ("NaN in vector", _query_line(emb=_b64([np.nan] + [1.0] * (DIM - 1))), "q.emb[0]: must be finite"),
    ("short vector", _query_line(emb=_b64(np.ones(DIM - 1))), "q.emb: 7 float32 values, expected 8"),
    ("vector not base64", _query_line(emb="***"), "q.emb: not valid base64"),
    ("NaN box", '{"q": {"cam": "c1", "lid": 7, "seg": 0, "reason": "lost", "cls": 2, "boxes": '
                '[[5, 0.5, NaN, 20, 70, 60, 0.8, 2]], "emb": "%s", "crops": 3}}' % _b64(np.eye(DIM)[0]),
     "q.boxes[0][2] (x1): must be finite"),
    ("inf time", _query_line(boxes=[[5, 1e999, 10, 20, 70, 60, 0.8, 2]]), "q.boxes[0][1] (ts): must be finite"),
    ("time past year 5000", _query_line(boxes=[[5, 1e15, 10, 20, 70, 60, 0.8, 2]]), "q.boxes[0][1] (ts)"),
    ("frame past 2**53", _query_line(boxes=[[2**64, 0.5, 10, 20, 70, 60, 0.8, 2]]), "q.boxes[0][0] (frame)"),
    ("negative frame", _query_line(boxes=[[-1, 0.5, 10, 20, 70, 60, 0.8, 2]]), "q.boxes[0][0] (frame)"),
    ("inside-out box", _query_line(boxes=[[5, 0.5, 70, 20, 10, 60, 0.8, 2]]), "q.boxes[0]: x2 < x1"),
    ("huge coordinate", _query_line(boxes=[[5, 0.5, -1e308, 20, 1e308, 60, 0.8, 2]]), "q.boxes[0][2] (x1)"),
    ("confidence 2", _query_line(boxes=[[5, 0.5, 10, 20, 70, 60, 2, 2]]), "q.boxes[0][6] (conf)"),
    ("short box", _query_line(boxes=[[5, 0.5, 10]]), "q.boxes[0]: expected [frame, ts"),
    ("no boxes", _query_line(boxes=[]), "q.boxes: expected a non-empty list"),
    ("box frame a string", _query_line(boxes=[["5", 0.5, 10, 20, 70, 60, 0.8, 2]]), "q.boxes[0][0] (frame)"),
    ("empty camera", _query_line(cam=""), "q.cam:"),
    ("escape in camera", _query_line(cam="c1\x1b]0;x\x07"), "q.cam:"),
    ("negative class", _query_line(cls=-1), "q.cls: must be in [0"),
    ("local id true", _query_line(lid=True), "q.lid: expected an integer"),
    ("missing crops", _query_line(crops=_pop("crops")), "q.crops: missing"),
    ("NaN colour", _query_line(colour=_b64([np.nan] * SIGNATURE_LEN)), "q.colour[0]: must be finite"),
    ("short colour", _query_line(colour=_b64([0.5] * 3)), "q.colour: 3 float32 values, expected 40"),
    ("negative colour", _query_line(colour=_b64([-1.0] * SIGNATURE_LEN)), "q.colour: values must be in [0, 1]"),
    ("NaN tick", '{"t": NaN}', "t: must be finite"),
    ("tick a string", '{"t": "soon"}', "t: expected a number"),
    ("unknown record", '{"x": 1}', "expected one of"),
    ("progress without a tick", '{"p": {}}', "expected one of"),
    ("progress not an object", '{"t": 1, "p": [1]}', "p: expected an object of cameras"),
    ("progress camera id hostile", '{"t": 1, "p": {"c1\\u001b[2J": [1, []]}}', "p: camera id"),
    ("progress record short", '{"t": 1, "p": {"c1": [1]}}', "p.c1: expected [ts or null"),
    ("progress time a string", '{"t": 1, "p": {"c1": ["now", []]}}', "p.c1[0]: expected a number"),
    ("progress span NaN", '{"t": 1, "p": {"c1": [1, [[NaN, 1]]]}}', "p.c1[1][0][0]: must be finite"),
    ("progress span short", '{"t": 1, "p": {"c1": [1, [[1]]]}}', "p.c1[1][0]: expected [first_ts, last_ts]"),
    ("a list", "[1, 2]", "expected one of"),
    ("no-crops tracklet not an object", '{"n": 3}', "n: expected an object"),
    ("not JSON", "{oops", "not valid JSON"),
    ("deeply nested", "[" * 100000 + "]" * 100000, "nested too deeply"),
    ("binary", b"\x89PNG\r\n\x1a\n\xff\x00".decode("latin-1"), "not UTF-8 text (byte 0x89 at column 1)"),
]


@pytest.mark.parametrize(("name", "line", "expect"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_bad_line_is_named_with_file_line_and_field(tmp_path: Path, name: str, line: str, expect: str) -> None:
    lines = _good_log(tmp_path / "good.jsonl")
    path = tmp_path / "bad.jsonl"
    data = "\n".join([lines[0], lines[1], line, *lines[2:]]) + "\n"
    path.write_bytes(data.encode("latin-1") if name == "binary" else data.encode("utf-8"))
    with pytest.raises(RecordingError) as err:
        list(read_embedding_log(path))
    msg = str(err.value)
    assert msg.startswith(f"{path}:3: ") and expect in msg, msg
    assert "\n" not in msg and "\x1b" not in msg and len(msg) < 400, msg


@pytest.mark.parametrize(("first", "expect"), [
    (b"", "empty, not a reidd embeddings log"),
    (b"[1]\n", ":1: not a reidd embeddings log"),
    (b'{"reidd_embeddings": 1, "dim": 1e300}\n', ":1: dim: must be in [1, 65536]"),
    (b'{"reidd_embeddings": 1, "dim": true}\n', ":1: dim: expected an integer"),
    (b'{"reidd_embeddings": 1}\n', ":1: header.dim: missing"),
    (b"\x00\x01\x02\xff" * 100, ":1: not UTF-8 text"),
    (b'{"reidd_embeddings": 1, "di', ":1: not valid JSON"),  # a cut header is not skipped: nothing is left
])
def test_bad_header(tmp_path: Path, first: bytes, expect: str) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(first)
    with pytest.raises(RecordingError) as err:
        list(read_embedding_log(path))
    assert str(err.value).startswith(str(path)) and expect in str(err.value), err.value


def test_cut_last_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = _good_log(tmp_path / "good.jsonl")
    whole = list(read_embedding_log(tmp_path / "good.jsonl"))
    for cut in (len(lines[1]) // 2, 5, len(lines[1]) - 1):
        path = tmp_path / "cut.jsonl"
        path.write_text("\n".join(lines) + "\n" + lines[1][:cut])  # a crash in the middle of a write
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            got = list(read_embedding_log(path))
        assert [k for k, _ in got] == [k for k, _ in whole]
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warned) == 1 and f"{path}:{len(lines) + 1}:" in warned[0], warned
    # the last line complete but for its newline is used, not skipped
    path.write_text("\n".join(lines))
    assert [k for k, _ in read_embedding_log(path)] == [k for k, _ in whole]
    # a bad line that is not the last, or a last one with its newline, is an error
    path.write_text("\n".join([*lines[:2], lines[1][:20], *lines[2:]]) + "\n")
    with pytest.raises(RecordingError, match=r"cut\.jsonl:3: not valid JSON"):
        list(read_embedding_log(path))
    path.write_text("\n".join(lines) + "\n" + lines[1][:20] + "\n")
    with pytest.raises(RecordingError, match=rf"cut\.jsonl:{len(lines) + 1}: not valid JSON"):
        list(read_embedding_log(path))
    # warn=False (rematch's second reading) says nothing
    path.write_text("\n".join(lines) + "\n" + lines[1][:20])
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        list(read_embedding_log(path, warn=False))
    assert not caplog.records


def test_vectors_are_normalised_in_float64(tmp_path: Path) -> None:
    """Huge and small (but normal) vectors come out at unit length, with the direction kept; reidd's own
    unit vectors come out bit for bit as recorded."""
    rng = np.random.default_rng(5)
    v = rng.normal(size=DIM)
    unit = (v / np.linalg.norm(v)).astype(np.float32)
    lines = _good_log(tmp_path / "good.jsonl")
    recorded = [e.embedding for k, e in read_embedding_log(tmp_path / "good.jsonl") if k == "query"]
    for i, line in enumerate(lines[1:]):
        if '"q"' in line:
            rec = json.loads(line)["q"]
            assert np.array_equal(np.frombuffer(base64.b64decode(rec["emb"]), "<f4"), recorded.pop(0)), i
    for scale in (1e35, 3e38 / np.abs(v).max(), 1e-5, 1e-3):
        path = tmp_path / "scaled.jsonl"
        path.write_text("\n".join([lines[0], _query_line(emb=_b64(unit * scale))]) + "\n")
        (_, _), (kind, e) = read_embedding_log(path)
        assert kind == "query" and e.embedding.dtype == np.float32
        assert np.isfinite(e.embedding).all() and abs(float(np.linalg.norm(e.embedding)) - 1) < 1e-5, scale
        assert float(e.embedding @ unit) > 0.99999, scale


def test_progress_is_recorded_when_it_changes_and_read_back(tmp_path: Path) -> None:
    from reidd.types import CameraProgress

    path = tmp_path / "log.jsonl"
    log = EmbeddingLog(path, DIM)
    p1 = {"c1": CameraProgress(2.0, ((0.5, 1.9),)), "c2": CameraProgress(2.0)}
    p2 = {"c1": CameraProgress(float("inf")), "c2": CameraProgress(2.1)}
    log.tick(2.0, p1)
    log.tick(2.0, p1)  # nothing new: no line
    log.tick(2.1, p1)  # a new time, the same progress: the time only
    log.tick(2.1, p2)
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[2]) == {"t": 2.1}
    assert json.loads(lines[3])["p"]["c1"] == [None, []]  # an ended source
    ticks = [item for kind, item in read_embedding_log(path) if kind == "tick"]
    assert ticks == [(2.0, p1), (2.1, None), (2.1, p2)]
