"""reidd.detect.file: MOTChallenge detection files read and served by camera and frame, errors naming the file
and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidd.config import DetectorConfig
from reidd.detect.base import DetectorLoadError
from reidd.detect.file import FileDetector, read_mot_detections
from reidd.types import Frame

from support import write_text as write


def test_reads_mot_lines_with_optional_class(tmp_path: Path) -> None:
    f = write(tmp_path / "c1.txt", "# comment\n\n1,-1,10,20,30,40,0.9,-1,-1,-1\n1 5 100 100 50 60 0.3\n"
                                   "3,-1,0,0,10,10,1.7,7\n")
    dets, has_class = read_mot_detections(f)
    assert sorted(dets) == [1, 3] and has_class
    d1 = dets[1]
    assert d1.xyxy.tolist() == [[10, 20, 40, 60], [100, 100, 150, 160]]
    assert d1.conf.tolist() == pytest.approx([0.9, 0.3])
    assert d1.cls.tolist() == [2, 2]  # -1 (MOT world coordinates) and absent: unknown, reported as car
    assert dets[3].cls.tolist() == [7] and dets[3].conf.tolist() == [1.0]  # clamped into 0..1


@pytest.mark.parametrize("line, expect", [
    ("1,-1,10,20,30", "expected frame,id,x,y,w,h,conf"),
    ("1,-1,10,abc,30,40,0.9", "must be numbers"),
    ("0,-1,10,20,30,40,0.9", "frame must be a whole number >= 1"),
    ("1.5,-1,10,20,30,40,0.9", "frame must be a whole number >= 1"),
    ("2,-1,10,20,0,40,0.9", "width and height must be > 0"),
    ("2,-1,10,20,nan,40,0.9", "finite"),
    ("2,-1,10,20,30,40,0.9,car", "class (field 8) must be a number"),
])
def test_malformed_line_is_named_with_file_and_line(tmp_path: Path, line: str, expect: str) -> None:
    f = write(tmp_path / "c1.txt", "1,-1,10,20,30,40,0.9,-1,-1,-1\n" + line + "\n")
    with pytest.raises(DetectorLoadError) as exc:
        read_mot_detections(f)
    assert f"{f}:2:" in str(exc.value) and expect in str(exc.value)


def test_missing_or_binary_file(tmp_path: Path) -> None:
    with pytest.raises(DetectorLoadError, match="detection file not found"):
        read_mot_detections(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x01" * 20)
    with pytest.raises(DetectorLoadError, match="not a text file"):
        read_mot_detections(tmp_path / "bin.txt")


def test_detector_serves_frames_by_camera_and_index(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "2,-1,10,20,30,40,0.9,3\n2,-1,50,20,30,40,0.9,0\n")
    write(tmp_path / "b.txt", "1,-1,1,2,3,4,0.5\n")
    det = FileDetector(DetectorConfig(type="file", detections_dir=str(tmp_path)), ["a", "b"])
    img = np.zeros((100, 100, 3), np.uint8)
    out = det.detect([Frame("a", 0, 0.0, img), Frame("a", 1, 0.1, img), Frame("b", 0, 0.0, img)])
    assert [len(d) for d in out] == [0, 1, 1]  # frame index 1 is MOT frame 2; class 0 (person) filtered out
    assert out[1].cls.tolist() == [3]
    with pytest.raises(DetectorLoadError, match="c.txt"):
        FileDetector(DetectorConfig(type="file", detections_dir=str(tmp_path)), ["a", "c"])
