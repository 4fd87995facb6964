"""reidd.detect.openvino decoders on outputs recorded from the real Open Model Zoo models (data/omz_outputs.npz:
crossroad-1016's SSD rows and 2004's ATSS boxes + labels for one frame of the UA-DETRAC clip, 960x540), the label
tables (reidd.detect.labels) and the config checks of ``detector.type: openvino``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reidd.config import ConfigError, load_config
from reidd.detect.labels import LABEL_NAMES, MODEL_LABELS, label_table
from reidd.detect.openvino import decode_atss, decode_ssd

from support import write_config as write

DATA = np.load(Path(__file__).parent / "data" / "omz_outputs.npz")
W, H = (int(v) for v in DATA["frame_size"])


def test_ssd_rows_scaled_to_the_frame_filtered_by_confidence() -> None:
    rows = DATA["ssd"].reshape(-1, 7)
    xyxy, conf, lab = decode_ssd(DATA["ssd"], 0.3, (W, H))
    want = rows[rows[:, 2] >= 0.3]
    assert len(xyxy) == len(want) > 10  # a busy intersection
    assert (conf >= 0.3).all() and np.allclose(conf, want[:, 2])
    assert np.allclose(xyxy, want[:, 3:7] * [W, H, W, H])
    assert set(lab.tolist()) <= {1, 2, 3}  # crossroad-1016's IR: vehicle, person, bike
    assert (xyxy[:, 2] > xyxy[:, 0]).all() and (xyxy[:, 3] > xyxy[:, 1]).all()
    # a lower threshold only adds boxes
    assert len(decode_ssd(DATA["ssd"], 0.1, (W, H))[0]) > len(xyxy)


def test_ssd_list_ends_at_the_first_negative_image_id() -> None:
    rows = DATA["ssd"].reshape(-1, 7).copy()
    rows[3, 0] = -1  # what the DetectionOutput layer writes after the last detection
    xyxy, _, _ = decode_ssd(rows.reshape(1, 1, -1, 7), 0.0, (W, H))
    assert len(xyxy) == 3
    assert np.allclose(xyxy, rows[:3, 3:7] * [W, H, W, H])


def test_atss_boxes_scaled_from_input_pixels() -> None:
    boxes, labels = DATA["atss_boxes"], DATA["atss_labels"]
    xyxy, conf, lab = decode_atss(boxes, labels, 0.5, (448, 256), (W, H))
    keep = boxes[:, 4] >= 0.5
    assert len(xyxy) == int(keep.sum()) > 0
    assert np.allclose(xyxy, boxes[keep, :4] * [W / 448, H / 256, W / 448, H / 256])
    assert np.array_equal(lab, labels[keep]) and np.allclose(conf, boxes[keep, 4])
    # a tile half the frame wide: the same input pixels land in half the width
    half, _, _ = decode_atss(boxes, labels, 0.5, (448, 256), (W // 2, H))
    assert np.allclose(half[:, [0, 2]] * 2, xyxy[:, [0, 2]], atol=1e-3)


def test_label_tables_follow_the_model_cards_and_the_override() -> None:
    # crossroad-1016's IR (not its card): 1 vehicle, 2 person, 3 bike; -0078: 1 person, 2 vehicle, 3 bike
    assert label_table(None, "/m/person-vehicle-bike-detection-crossroad-1016.xml") == {1: 2, 2: 0, 3: 3}
    assert label_table(None, "x/person-vehicle-bike-detection-crossroad-0078.xml") == {1: 0, 2: 2, 3: 3}
    assert label_table(None, "vehicle-detection-0202.xml") == {0: 2}
    assert label_table(None, "person-vehicle-bike-detection-2004.xml") == {0: 2, 1: 0, 2: 3}
    assert label_table(None, "my-detector.xml") is None
    assert label_table({0: "truck", 1: "ignore", 4: "two-wheeler"}, "my-detector.xml") == {0: 7, 4: 3}
    assert set(v for t in MODEL_LABELS.values() for v in t.values()) <= set(LABEL_NAMES)


def _model(tmp: Path, stem: str, xml: bytes = b"<net/>", bin_: bytes | None = b"\0") -> Path:
    (tmp / f"{stem}.xml").write_bytes(xml)
    if bin_ is not None:
        (tmp / f"{stem}.bin").write_bytes(bin_)
    return tmp / f"{stem}.xml"


def _problems(tmp: Path, detector: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as ei:
        load_config(write(tmp, "cameras:\n  - {id: c1, url: a.mp4}\n" + detector))
    return dict(ei.value.problems)


def test_config_checks_of_an_openvino_detector(tmp_path: Path, video: Path) -> None:
    _model(tmp_path, "person-vehicle-bike-detection-2004")
    cfg = load_config(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n"
                                      "detector: {type: openvino, model: person-vehicle-bike-detection-2004.xml}\n"))
    assert cfg.detector.model == str(tmp_path / "person-vehicle-bike-detection-2004.xml")  # resolved
    _model(tmp_path, "mine")
    assert "required for mine.xml" in _problems(tmp_path, "detector: {type: openvino, model: mine.xml}\n")[
        "detector.labels"]
    load_config(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n"
                                "detector: {type: openvino, model: mine.xml, labels: {0: vehicle}}\n"))
    msg = _problems(tmp_path, "detector: {type: openvino, model: mine.xml, labels: {0: lorry}}\n")["detector.labels"]
    assert "'lorry' is not one of" in msg
    _model(tmp_path, "nobin", bin_=None)
    assert "no weights file nobin.bin" in _problems(tmp_path, "detector: {type: openvino, model: nobin.xml}\n")[
        "detector.model"]
    assert "not found" in _problems(tmp_path, "detector: {type: openvino, model: gone.xml}\n")["detector.model"]
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert "not an OpenVINO IR .xml" in _problems(tmp_path, "detector: {type: openvino, model: m.onnx}\n")[
        "detector.model"]
    assert "holds 3 .xml files" in _problems(tmp_path, "detector: {type: openvino, model: .}\n")["detector.model"]


def test_tracker_thresholds_follow_an_openvino_detector_unless_set(tmp_path: Path, video: Path) -> None:
    _model(tmp_path, "person-vehicle-bike-detection-crossroad-1016")
    det = "detector: {type: openvino, model: person-vehicle-bike-detection-crossroad-1016.xml}\n"
    cfg = load_config(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n" + det))
    assert (cfg.tracker.track_high_thresh, cfg.tracker.new_track_thresh) == (0.15, 0.15)
    cfg = load_config(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n" + det + "tracker: {new_track_thresh: 0.3}\n"))
    assert (cfg.tracker.track_high_thresh, cfg.tracker.new_track_thresh) == (0.15, 0.3)
    cfg = load_config(write(tmp_path, "cameras:\n  - {id: c1, url: a.mp4}\n"))  # yolo: the tracker's own defaults
    assert (cfg.tracker.track_high_thresh, cfg.tracker.new_track_thresh) == (0.25, 0.25)


def test_a_model_of_any_input_size_runs_at_imgsz_with_its_boxes_in_frame_pixels(tmp_path: Path) -> None:
    """A user's SSD-layout IR with a dynamic input: reshaped to detector.imgsz, run through OpenVINO for real, its
    normalised box mapped onto the frame, labels taken from detector.labels."""
    import openvino as ov

    from reidd.config import DetectorConfig
    from reidd.detect.base import build_detector
    from reidd.types import Frame

    x = ov.opset13.parameter([1, 3, -1, -1], ov.Type.f32, name="image")
    row = ov.opset13.constant(np.array([[[[0, 4, 0.9, 0.1, 0.2, 0.5, 0.6],
                                          [0, 9, 0.8, 0.6, 0.2, 0.9, 0.6],  # a label the table does not map: dropped
                                          [-1, 0, 0, 0, 0, 0, 0]]]], np.float32))
    zero = ov.opset13.multiply(ov.opset13.reduce_mean(x, [1, 2, 3], True),
                               ov.opset13.constant(np.zeros((1, 1, 3, 7), np.float32)))
    ov.save_model(ov.Model([ov.opset13.add(row, zero)], [x], "mine"), str(tmp_path / "mine.xml"))
    det = build_detector(DetectorConfig(type="openvino", model=str(tmp_path / "mine.xml"), labels={4: "truck"},
                                        imgsz=320), ["c"])
    assert det.input_size == (320, 320)
    (d,) = det.detect([Frame("c", 0, 0.0, np.zeros((100, 200, 3), np.uint8))])
    np.testing.assert_allclose(d.xyxy, [[20, 20, 100, 60]], atol=1.0)  # OpenVINO may compute in bf16/fp16
    assert d.cls.tolist() == [7] and d.conf.tolist() == [pytest.approx(0.9, abs=0.01)]
