"""Hostile and broken input: one line naming the field, exit code 2, no traceback, no side effect.

Each case is a real command in a subprocess (`reidd check-config`, `replay` or `run`) on a config written
for the case; nothing is mocked. The table covers what the hardening issue found broken."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from support import ASSETS, ROOT


LONG = "x" * 300


@dataclass
class Case:
    name: str
    yaml: str  # the cameras.yaml; {video} is a real video file, {tmp} the case's folder
    command: str = "check-config"  # or "replay" / "run"
    field: str = ""  # must appear in stderr
    also: tuple[str, ...] = ()  # more text stderr must hold
    absent: tuple[str, ...] = ()  # text stderr must not hold
    setup: object = None  # callable(tmp) preparing files
    max_s: float = 60.0
    env: dict = dataclasses.field(default_factory=dict)


def _video(tmp: Path) -> Path:
    path = tmp / "real.mp4"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 96))
    for i in range(10):
        w.write(np.full((96, 160, 3), i * 20, np.uint8))
    w.release()
    return path


def _png_named_mp4(tmp: Path) -> None:
    ok, buf = cv2.imencode(".png", np.zeros((32, 32, 3), np.uint8))
    (tmp / "still.mp4").write_bytes(buf.tobytes())


def _junk(name: str):
    def make(tmp: Path) -> None:
        (tmp / name).write_bytes(b"\x00junk" * 200)
    return make


def _foreign_onnx(tmp: Path) -> None:
    """A valid ONNX model that reidd did not export (no spec metadata)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "foreign", [x], [y])
    onnx.save(helper.make_model(graph), str(tmp / "foreign.onnx"))


def _openvino_empty(tmp: Path) -> None:
    (tmp / "empty_openvino_model").mkdir()


def _openvino_no_bin(tmp: Path) -> None:
    d = tmp / "half_openvino_model"
    d.mkdir()
    (d / "model.xml").write_text("<net/>")


class _Evil:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_pt(tmp: Path) -> None:
    torch.save({"model": _Evil(tmp / "PWNED"), "train_args": {}}, tmp / "evil.pt")


def _file_as_parent(tmp: Path) -> None:
    (tmp / "plainfile").write_text("not a folder")


def _folder(tmp: Path) -> None:
    (tmp / "adir").mkdir()


def _junk_openvino(tmp: Path) -> None:
    (tmp / "junk.xml").write_bytes(b"<net>\x00junk" * 50)
    (tmp / "junk.bin").write_bytes(b"\x00" * 64)


def _xml_entity_bomb(tmp: Path) -> None:
    """A billion-laughs .xml: OpenVINO's parser must not expand it (refused in well under a second)."""
    ents = ['<!ENTITY l0 "lol">'] + [f'<!ENTITY l{i} "{("&l" + str(i - 1) + ";") * 10}">' for i in range(1, 10)]
    (tmp / "bomb.xml").write_text('<?xml version="1.0"?>\n<!DOCTYPE n [' + "".join(ents) + ']>\n'
                                  '<net name="x" version="11"><layers><layer id="0" name="&l9;" type="Parameter" '
                                  'version="opset1"/></layers></net>\n')
    (tmp / "bomb.bin").write_bytes(b"\x00" * 8)


def _foreign_openvino(tmp: Path) -> None:
    """A valid OpenVINO IR that is no detector (an image in, the same image out)."""
    import openvino as ov

    x = ov.opset13.parameter([1, 3, 64, 64], ov.Type.f32, name="image")
    ov.save_model(ov.Model([ov.opset13.relu(x)], [x], "foreign"), str(tmp / "foreign.xml"))


BOMB = "".join(f"{a}: &{a} [{', '.join(['*' + p] * 9 if p else ['lol'] * 9)}]\n"
               for a, p in zip("abcdefghi", ["", *"abcdefgh"])) + "cameras: *i\n"


CAM = "cameras:\n  - {{id: c1, url: {video}}}\n"


NO_REID = "reid: {{enabled: false}}\nmetrics: {{enabled: false}}\n"


CASES = [
    Case("yaml alias bomb", BOMB, field="alias", max_s=5.0),
    Case("long camera file name", f"cameras:\n  - {{{{id: c1, url: {LONG}.mp4}}}}\n", field="cameras[0].url",
         also=("too long",)),
    Case("long detector.model", CAM + f"detector: {{{{model: {LONG}.onnx}}}}\n", field="detector.model",
         also=("too long",)),
    Case("long reid.weights", CAM + f"reid: {{{{weights: {LONG}.pt}}}}\n", field="reid.weights", also=("too long",)),
    Case("unset env var named once", 'cameras:\n  - {{id: c1, url: "${{REIDD_TEST_UNSET}}/a.mp4"}}\n',
         field="cameras[0].url", also=("REIDD_TEST_UNSET",), absent=("video file not found",)),
    Case("NUL byte in a path", 'cameras:\n  - {{id: c1, url: "a\\0b.mp4"}}\n', field="cameras[0].url",
         also=("NUL",), absent=("\x00",)),
    Case("PNG as a video", "cameras:\n  - {{id: c1, url: still.mp4}}\n", setup=_png_named_mp4,
         field="cameras[0].url", also=("PNG image",)),
    Case("empty OpenVINO folder", CAM + "detector: {{model: empty_openvino_model}}\n", setup=_openvino_empty,
         field="detector.model", also=("no .xml",)),
    Case("OpenVINO without .bin", CAM + "detector: {{model: half_openvino_model}}\n", setup=_openvino_no_bin,
         field="detector.model", also=(".bin",)),
    Case("spool_dir under a file", CAM + "events: {{spool_dir: plainfile/spool}}\n", setup=_file_as_parent,
         field="events.spool_dir", also=("not a folder",)),
    Case("crops_dir under a file", CAM + "events: {{crops_dir: plainfile/crops}}\n", setup=_file_as_parent,
         field="events.crops_dir"),
    Case("events.jsonl is a folder", CAM + "events: {{jsonl: adir}}\n", setup=_folder, field="events.jsonl",
         also=("is a folder",)),
    Case("junk reid.weights .pt", CAM + "reid: {{weights: junk.pt}}\nmetrics: {{enabled: false}}\n",
         setup=_junk("junk.pt"), command="replay", field="reid.weights"),
    Case("foreign reid.weights .onnx", CAM + "reid: {{weights: foreign.onnx}}\nmetrics: {{enabled: false}}\n",
         setup=_foreign_onnx, command="replay", field="reid.weights"),
    Case("junk reid.weights .onnx", CAM + "reid: {{weights: junk.onnx}}\nmetrics: {{enabled: false}}\n",
         setup=_junk("junk.onnx"), command="replay", field="reid.weights"),
    Case("junk detector .onnx", CAM + NO_REID + "detector: {{model: junk.onnx}}\n", setup=_junk("junk.onnx"),
         command="replay", field="detector.model"),
    Case("junk OpenVINO detector .xml", CAM + NO_REID + "detector: {{type: openvino, model: junk.xml, labels: {{0: vehicle}}}}\n",
         setup=_junk_openvino, command="replay", field="detector.model", also=("not a readable OpenVINO model",)),
    Case("OpenVINO .xml entity bomb", CAM + NO_REID + "detector: {{type: openvino, model: bomb.xml, labels: {{0: vehicle}}}}\n",
         setup=_xml_entity_bomb, command="replay", field="detector.model", max_s=30.0),
    Case("foreign OpenVINO model", CAM + NO_REID + "detector: {{type: openvino, model: foreign.xml, labels: {{0: vehicle}}}}\n",
         setup=_foreign_openvino, command="replay", field="detector.model", also=("not a detector",)),
    Case("OpenVINO model of unknown labels", CAM + "detector: {{type: openvino, model: foreign.xml}}\n",
         setup=_foreign_openvino, field="detector.labels"),
    Case("pickle detector that runs code", CAM + NO_REID + "detector: {{model: evil.pt}}\n", setup=_evil_pt,
         command="replay", field="detector.model", also=("trust_pickle",)),
]


def _snapshot(tmp: Path) -> set[str]:
    return {str(p.relative_to(tmp)) for p in tmp.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_table(case: Case, tmp_path: Path) -> None:
    video = _video(tmp_path)
    if case.setup:
        case.setup(tmp_path)
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(case.yaml.format(video=video, tmp=tmp_path), encoding="utf-8")
    args = [str(cfg)] if case.command == "check-config" else ["--config", str(cfg)]
    if case.command == "replay":
        args += ["--out", str(tmp_path / "out")]
    before = _snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "REIDD_TEST_UNSET"} | case.env
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "reidd", case.command, *args], capture_output=True, text=True,
                       timeout=180, cwd=ROOT, env=env)
    took = time.monotonic() - t0
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    assert case.field in r.stderr, r.stderr[-2000:]
    for text in case.also:
        assert text in r.stderr, (text, r.stderr[-2000:])
    for text in case.absent:
        assert text not in r.stderr, (text, r.stderr[-2000:])
    assert took < case.max_s, f"took {took:.1f} s"
    created = _snapshot(tmp_path) - before
    if case.command == "check-config":
        assert not created, f"check-config created {created}"
    else:  # a replay may create its output folder, nothing else outside it
        assert not {c for c in created if not c.startswith("out")}, created
    assert not (tmp_path / "PWNED").exists(), "a model file ran code"


def test_metrics_port_in_use_is_a_start_up_error(tmp_path: Path) -> None:
    video = _video(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        cfg = tmp_path / "cameras.yaml"
        cfg.write_text(CAM.format(video=video) + f"metrics: {{port: {port}}}\n", encoding="utf-8")
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "reidd", "run", "--config", str(cfg)], capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
        took = time.monotonic() - t0
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "metrics.port" in r.stderr and "already in use" in r.stderr
    # refused before any model or Redis is started (only the interpreter and imports: well under 16 s)
    assert took < 12, took
    assert "embedder" not in r.stderr and "redis " not in r.stderr


def test_replay_output_under_a_file(tmp_path: Path) -> None:
    video = _video(tmp_path)
    (tmp_path / "plainfile").write_text("x")
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(CAM.format(video=video) + NO_REID.format(), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "reidd", "replay", "--config", str(cfg), "--out",
                        str(tmp_path / "plainfile" / "out")], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--out" in r.stderr, r.stderr[-2000:]


@pytest.mark.skipif(not (ASSETS / "models" / "yolo11n_int8_openvino_model").is_dir(), reason="needs ../shared")
def test_shipped_detector_still_loads(tmp_path: Path) -> None:
    """The checks above refuse broken detectors, not working ones."""
    from reidd.config import DetectorConfig
    from reidd.detect.yolo import YoloDetector

    det = YoloDetector(DetectorConfig(model=str(ASSETS / "models" / "yolo11n_int8_openvino_model")))
    assert det._warm


def test_real_ultralytics_checkpoint_loads_under_the_safe_loader(tmp_path: Path) -> None:
    """A genuine ultralytics .pt (built from its yaml here: no download) passes the restricted loader, runs,
    and the restricted loader stays on for the process afterwards."""
    from ultralytics import YOLO
    from ultralytics.nn import tasks

    from reidd.config import DetectorConfig
    from reidd.detect.base import DetectorLoadError
    from reidd.detect.yolo import YoloDetector

    YOLO("yolo11n.yaml", task="detect").save(str(tmp_path / "real.pt"))
    det = YoloDetector(DetectorConfig(model=str(tmp_path / "real.pt"), imgsz=160))
    assert len(det.detect([])) == 0 and tasks.SAFE_LOAD
    _evil_pt(tmp_path)
    with pytest.raises(DetectorLoadError, match="trust_pickle"):
        YoloDetector(DetectorConfig(model=str(tmp_path / "evil.pt")))
    assert not (tmp_path / "PWNED").exists()


def test_read_only_mount_outputs_are_named(tmp_path: Path) -> None:
    """Outputs on a read-only file system (a real read-only tmpfs in a private mount namespace)."""
    import shutil

    video = _video(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = tmp_path / "cameras.yaml"
    cfg.write_text(CAM.format(video=video) + f"events: {{spool_dir: {ro}/spool, crops_dir: {ro}/crops, "
                   f"jsonl: {ro}/events.jsonl}}\n", encoding="utf-8")
    if shutil.which("unshare") is None:
        pytest.skip("no unshare (util-linux) on this machine")
    user_ns = [] if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0 else [
        "--user", "--map-root-user"]
    if subprocess.run(["unshare", *user_ns, "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespace on this machine (unshare refused)")
    script = (f"mount -t tmpfs -o ro,size=1m none {ro} && exec {sys.executable} -m reidd check-config {cfg}")
    r = subprocess.run(["unshare", *user_ns, "--mount", "sh", "-c", script], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for field in ("events.spool_dir", "events.crops_dir", "events.jsonl"):
        assert field in r.stderr and "not writable" in r.stderr, r.stderr
