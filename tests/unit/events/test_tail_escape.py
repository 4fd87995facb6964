"""reidd/events/tail.py never lets stream text drive the terminal: controls, bidi overrides and lone surrogates
are shown as escapes in the readable lines, and --json lines stay valid JSON with the same values."""

from __future__ import annotations

import json

import pytest

from reidd.events.tail import _show, safe_json, visible

HOSTILE = [
    "\x1b]0;owned\x07",  # OSC: set the window title
    "\x1b[2J\x1b[H",  # clear the screen
    "\x9b31m",  # C1 CSI
    "a\rb\nc\td\x00e\x7f",
    "\u202eevil\u202c",  # bidi override
    "\u2066x\u2069\u200b\u2028\ufeff",
    "\ud800",  # lone surrogate (from a JSON \\ud800 escape)
    "\U000e0041",  # a tag character
]
BAD_CODEPOINTS = set(range(0x20)) | set(range(0x7F, 0xA0)) | {0x202E, 0x202C, 0x2066, 0x2069, 0x200B, 0x2028, 0xFEFF,
                                                             0xD800, 0xE0041}


def _clean(text: str) -> bool:
    return not any(ord(c) in BAD_CODEPOINTS for c in text)


@pytest.mark.parametrize("s", HOSTILE)
def test_visible_escapes_what_a_terminal_acts_on(s: str) -> None:
    out = visible(f"cam {s} end")
    assert _clean(out) and out.startswith("cam ") and out.endswith(" end")
    out.encode("utf-8")  # no lone surrogate left to crash the print
    assert visible("plain café ✓ 車") == "plain café ✓ 車"
    assert visible("\x1b") == "\\x1b" and visible("\u202e") == "\\u202e" and visible("\U000e0041") == "\\U000e0041"


@pytest.mark.parametrize("s", HOSTILE)
def test_safe_json_keeps_the_values(s: str) -> None:
    obj = {"type": "tracklet", "camera_id": s, "nested": {"k" + s: [s, 1]}}
    line = safe_json(json.dumps(obj, ensure_ascii=False))
    assert line is not None and _clean(line) and "\n" not in line
    assert json.loads(line) == obj


def test_safe_json_passes_clean_canonical_json_unchanged_and_refuses_non_json() -> None:
    canonical = '{"camera_id":"c1","best_crop":"/crops/café.jpg","type":"tracklet"}'
    assert safe_json(canonical) is canonical
    pretty = '{\n  "a": 1\n}'
    assert safe_json(pretty) == '{"a":1}'
    for bad in ("\x1b]0;x\x07 not json", '{"a": NaN}', '{"a": Infinity}', "[" * 100000, ""):
        assert safe_json(bad) is None


@pytest.mark.parametrize("raw", [False, True])
def test_show_writes_no_control_characters(raw: bool, capsys: pytest.CaptureFixture) -> None:
    evil = "".join(HOSTILE)
    entries = [
        json.dumps({"type": "tracklet", "time": evil, "tracklet_id": evil, "camera_id": evil, "global_id": 1},
                   ensure_ascii=False),
        json.dumps({"type": "match", "time": "t", "query": {"tracklet_id": evil, "camera_id": evil},
                    "gallery": {"tracklet_id": "g", "camera_id": evil}, "similarity": 0.5}, ensure_ascii=False),
        json.dumps({"type": evil, "x": evil}, ensure_ascii=False),
        '{"type": "tracklet", "camera_id": "\\ud800\\u001b"}',
        "\x1b]0;raw\x07 not json \u202e",
    ]
    for i, data in enumerate(entries):
        _show(f"1-{i}", data, raw)
    out, err = capsys.readouterr()
    assert _clean(out.replace("\n", "")) and _clean(err.replace("\n", ""))
    lines = out.splitlines()
    if raw:
        assert [json.loads(line) for line in lines] == [json.loads(d) for d in entries[:4]]
        assert "1-4" in err and "not JSON" in err  # stdout stays JSON lines
    else:
        assert len(lines) == 5 and "\\x1b]0;owned\\x07" in lines[0] and "\\u202e" in lines[1]
