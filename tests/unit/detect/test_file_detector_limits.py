"""reidd.detect.file with hostile or odd detection files: boxes clipped to the frame they are served with, absurd
values refused with the file and line before any camera starts, an empty file warned about, unsorted files served
frame by frame from the index."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from reidd.config import DetectorConfig
from reidd.detect.base import DetectorLoadError
from reidd.detect.file import FileDetector

from support import write_text as write


def _detector(folder: Path, cams: list[str], classes: list[int] | None = None) -> FileDetector:
    return FileDetector(DetectorConfig(type="file", detections_dir=str(folder), classes=classes or []), cams)


def _frame(cam: str, index: int, width: int, height: int):
    from reidd.types import Frame

    return Frame(cam, index, index / 10, np.zeros((height, width, 3), np.uint8))


def test_boxes_are_clipped_to_the_frame_and_dropped_when_nothing_is_left(tmp_path: Path) -> None:
    write(tmp_path / "c1.txt", "\n".join([
        "1,-1,10,20,30,40,0.9,2",      # inside: unchanged
        "1,-1,-15,-5,30,40,0.8,2",     # over the top-left corner: cut at 0
        "1,-1,140,100,50,50,0.7,2",    # over the bottom-right corner: cut at 160 x 120
        "1,-1,200,10,30,30,0.6,2",     # right of the image: dropped
        "1,-1,10,-80,30,40,0.5,2",     # above it: dropped
        "1,-1,159.5,10,30,30,0.4,2",   # half a pixel left once cut: dropped
        "2,-1,-1000,-1000,5000,5000,0.3,7",  # covers the whole image: the image
    ]) + "\n")
    out = _detector(tmp_path, ["c1"]).detect([_frame("c1", 0, 160, 120), _frame("c1", 1, 160, 120)])
    assert out[0].xyxy.tolist() == [[10, 20, 40, 60], [0, 0, 15, 35], [140, 100, 160, 120]]
    assert out[0].conf.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert out[1].xyxy.tolist() == [[0, 0, 160, 120]] and out[1].cls.tolist() == [7]


@pytest.mark.parametrize("line, expect", [
    ("1,-1,1e300,20,30,40,0.9", "x and y must be within"),
    ("1,-1,10,-1e39,30,40,0.9", "x and y must be within"),        # beyond float32: would become -inf
    ("1,-1,10,20,1e300,40,0.9", "width and height must be <="),
    ("1,-1,10,20,30,40,0.9,1e30", "class (field 8) must be a whole number 0..65535"),  # wrapped to int32 min
    ("1,-1,10,20,30,40,0.9,nan", "class (field 8) must be a finite number"),
    ("1e12,-1,10,20,30,40,0.9", "frame must be a whole number >= 1 and <= 100000000"),
    ("1,-1,10,20,30,40,0.9,2," + "0," * 3000, "line longer than 4096 bytes"),
])
def test_absurd_values_are_refused_naming_file_and_line(tmp_path: Path, line: str, expect: str) -> None:
    f = write(tmp_path / "c1.txt", "# header\n1,-1,10,20,30,40,0.9,2\n" + line + "\n")
    with pytest.raises(DetectorLoadError) as exc:
        _detector(tmp_path, ["c1"])
    msg = str(exc.value)
    assert msg.startswith(f"{f}:3: ") and expect in msg and "\n" not in msg, msg


def test_empty_file_is_served_with_a_warning_naming_it(tmp_path: Path, caplog) -> None:
    write(tmp_path / "c1.txt", "1,-1,10,20,30,40,0.9\n")
    f = write(tmp_path / "c2.txt", "# no boxes here\n\n")
    with caplog.at_level(logging.WARNING, logger="reidd.detect"):
        det = _detector(tmp_path, ["c1", "c2"])
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(f) in warned[0] and "no boxes" in warned[0], warned
    out = det.detect([_frame("c1", 0, 100, 100), _frame("c2", 0, 100, 100)])
    assert [len(d) for d in out] == [1, 0]


def test_unsorted_file_is_indexed_and_served_in_frame_order(tmp_path: Path) -> None:
    """Ground truth sorted by track id: frames jump back and forth; each frame's boxes come in file order."""
    from reidd.formats.mot import MotDetectionIndex

    lines, want = [], {}
    for tid in range(1, 6):
        for fr in range(tid, 40, tid):
            x = 10.0 * tid + fr
            lines.append(f"{fr},{tid},{x},5,20,10,1,3,-1,-1")
            want.setdefault(fr, []).append([x, 5, x + 20, 15])
        lines.append("# next track")
    f = write(tmp_path / "c1.txt", "\n".join(lines) + "\n")
    index = MotDetectionIndex(f)
    assert index.boxes == sum(len(v) for v in want.values()) and index.has_class
    assert index.runs <= len(lines)
    det = _detector(tmp_path, ["c1"], classes=[3])
    out = det.detect([_frame("c1", i, 640, 480) for i in range(45)])
    for i, d in enumerate(out):
        assert d.xyxy.tolist() == want.get(i + 1, []), i + 1
    det.close()
