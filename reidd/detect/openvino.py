"""OpenVINO IR detectors (``detector: {type: openvino, model: X.xml}``): Intel's Open Model Zoo person /
vehicle / bike detectors and any other IR with one of the two output layouts they use.

* **SSD** (``person-vehicle-bike-detection-crossroad-1016`` / ``-0078``, ``vehicle-detection-0202``): one
  output ``[1, 1, N, 7]``, each row ``image_id, label, conf, x1, y1, x2, y2`` with coordinates normalised to
  the input; a row with ``image_id < 0`` ends the list.
* **ATSS** (``person-vehicle-bike-detection-2004``): ``boxes [N, 5]`` (``x1, y1, x2, y2, conf`` in input
  pixels) and ``labels [N]``.

The decoder is chosen from the model's outputs, not its name. The input is prepared as these models expect
(their model cards): the frame (or tile) resized to the input size without letterboxing, BGR, 0-255; the
conversion to the model's layout and float type runs inside the compiled model (OpenVINO's pre-processing).

Labels are each model's own ids, mapped to the COCO ids the rest of reidd speaks (the event's ``cls``, the
class evidence of association): ``vehicle`` -> 2 (car: these models do not tell car, bus and truck apart),
``two-wheeler`` -> 3 (motorcycle), ``person`` -> 0. :data:`MODEL_LABELS` holds the tables of the shipped
models (from their model cards); ``detector.labels`` overrides or supplies one. Riders (a person box on a bike
box) become one two-wheeler as ``detector.riders`` does for COCO models.

Frames of several cameras (and their tiles) run as asynchronous infer requests in flight together
(``AsyncInferQueue``), with OpenVINO's throughput hint over ``REIDD_THREADS`` (default: every core).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from reidd.config import DetectorConfig
from reidd.detect.base import DetectorLoadError, one_line
from reidd.detect.geometry import Tile, clip_to_frame, merge_tiles, tile_layout
from reidd.detect.labels import label_table
from reidd.detect.riders import RiderPolicy
from reidd.device import cpu_threads
from reidd.types import Detections, Frame

log = logging.getLogger("reidd.detect")


def decode_ssd(out: np.ndarray, conf: float, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[1, 1, N, 7]`` SSD rows -> (xyxy in pixels of ``size`` = (width, height), conf, model label)."""
    rows = np.asarray(out, np.float32).reshape(-1, 7)
    end = np.nonzero(rows[:, 0] < 0)[0]
    if len(end):
        rows = rows[: end[0]]
    rows = rows[rows[:, 2] >= conf]
    w, h = size
    xyxy = rows[:, 3:7] * np.array([w, h, w, h], np.float32)
    return xyxy, rows[:, 2].copy(), rows[:, 1].astype(np.int64)


def decode_atss(boxes: np.ndarray, labels: np.ndarray, conf: float, input_size: tuple[int, int],
                size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ATSS ``boxes [N, 5]`` (input pixels, conf last) and ``labels [N]`` -> (xyxy in pixels of ``size``, conf,
    model label). ``input_size`` and ``size`` are (width, height)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 5)
    lab = np.asarray(labels).reshape(-1).astype(np.int64)[: len(b)]
    keep = b[:, 4] >= conf
    b, lab = b[keep], lab[keep]
    sx, sy = size[0] / input_size[0], size[1] / input_size[1]
    return b[:, :4] * np.array([sx, sy, sx, sy], np.float32), b[:, 4].copy(), lab


class OpenVinoDetector:
    """One compiled OpenVINO model for every camera; frames and tiles run as infer requests in flight."""

    name = "openvino"

    def __init__(self, cfg: DetectorConfig, camera_ids: list[str] | None = None):
        try:
            import openvino as ov
        except ImportError as exc:
            raise DetectorLoadError("detector.type: 'openvino' needs the openvino package (a dependency of reidd: "
                                    "reinstall it, or pip install openvino)") from exc
        self.cfg = cfg
        xml = model_xml(cfg.model)
        core = ov.Core()
        try:
            model = core.read_model(str(xml))
        except Exception as exc:  # OpenVINO raises RuntimeError for a junk .xml or a .bin that does not fit it
            raise DetectorLoadError(f"detector.model: {xml} is not a readable OpenVINO model: {one_line(exc)}") from exc
        self._layout = _output_layout(model, xml)
        inp = _image_input(model, xml)
        shape = inp.get_partial_shape()
        if shape[2].is_dynamic or shape[3].is_dynamic:
            try:
                model.reshape({inp.get_any_name(): [1, 3, cfg.imgsz, cfg.imgsz]})
            except Exception as exc:
                raise DetectorLoadError(f"detector.model: {xml.name} takes images of any size and cannot be set to "
                                        f"detector.imgsz {cfg.imgsz}: {one_line(exc)}") from exc
        self.input_size = (model.inputs[0].get_partial_shape()[3].get_length(),
                           model.inputs[0].get_partial_shape()[2].get_length())  # (width, height)
        table = label_table(cfg.labels, xml)
        if table is None:
            raise DetectorLoadError(f"detector.labels: reidd has no label table for {xml.name}: map its label ids, "
                                    "e.g. {0: vehicle, 1: person, 2: two-wheeler}")
        self.labels = table
        self._lut = np.full(max(table, default=0) + 1, -1, np.int32)  # model label -> COCO id (-1: not kept)
        for k, v in table.items():
            self._lut[k] = v
        ppp = ov.preprocess.PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        model = ppp.build()
        threads = cpu_threads()
        try:
            self._compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT",
                                                              "INFERENCE_NUM_THREADS": threads})
        except Exception as exc:
            raise DetectorLoadError(f"detector.model: {xml} cannot be compiled for the CPU: {one_line(exc)}") from exc
        nreq = max(1, int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._queue = ov.AsyncInferQueue(self._compiled, nreq)
        self._results: dict[int, tuple] = {}
        self._queue.set_callback(self._done)
        self._riders = RiderPolicy(list(cfg.classes) or None, cfg.riders, tuple(cfg.rider_grow))
        self._kept = None if self._riders.classes is None else np.asarray(self._riders.classes)
        self._outputs = [self._compiled.outputs[i] for i in self._layout[1]]
        log.info("openvino detector: %s (%s outputs, input %dx%d, %d infer requests, %d threads)", xml.name,
                 self._layout[0], *self.input_size, nreq, threads)
        self._warm_up()

    def _warm_up(self) -> None:
        blank = np.zeros((self.input_size[1], self.input_size[0], 3), np.uint8)
        try:
            self.detect([Frame(camera_id="warm-up", index=0, ts=0.0, image=blank)])
        except Exception as exc:
            raise DetectorLoadError(f"detector.model: '{self.cfg.model}' loads but cannot run: {one_line(exc)}") from exc

    def _done(self, request, job: int) -> None:
        self._results[job] = tuple(request.get_tensor(o).data.copy() for o in self._outputs)

    def tiles_for(self, width: int, height: int) -> list[Tile]:
        """The frame regions the model sees: the whole frame for ``tiles: auto`` (the Open Model Zoo detectors are
        trained on whole frames squashed to their input; on the benchmark scenes two columns found fewer vehicles
        with crossroad-1016: recall 0.65 against 0.77), else :func:`reidd.detect.geometry.tile_layout`."""
        tiles = 1 if self.cfg.tiles == "auto" else self.cfg.tiles
        return tile_layout(width, height, tiles, self.cfg.tile_overlap, self.input_size[0])

    def detect(self, frames: list[Frame]) -> list[Detections]:
        jobs: list[tuple[int, Tile]] = []
        self._results.clear()
        for fi, f in enumerate(frames):
            h, w = f.image.shape[:2]
            for tile in self.tiles_for(w, h):
                x0, y0, x1, y1 = tile
                img = f.image if (x1 - x0, y1 - y0) == (w, h) else f.image[y0:y1, x0:x1]
                blob = cv2.resize(img, self.input_size, interpolation=cv2.INTER_LINEAR)[None]
                self._queue.start_async({0: blob}, len(jobs))
                jobs.append((fi, tile))
        self._queue.wait_all()
        parts: list[list[tuple[Detections, Tile]]] = [[] for _ in frames]
        for j, (fi, tile) in enumerate(jobs):
            parts[fi].append((self._decode(self._results[j], tile), tile))
        out = []
        for f, pieces in zip(frames, parts):
            h, w = f.image.shape[:2]
            d = pieces[0][0] if len(pieces) == 1 else merge_tiles(pieces, w, h, self.cfg.iou)
            out.append(self._riders.apply(clip_to_frame(d, w, h), w, h))
        return out

    def _decode(self, outputs: tuple, tile: Tile) -> Detections:
        size = (tile[2] - tile[0], tile[3] - tile[1])
        if self._layout[0] == "ssd":
            xyxy, conf, lab = decode_ssd(outputs[0], self.cfg.conf, size)
        else:
            xyxy, conf, lab = decode_atss(outputs[0], outputs[1], self.cfg.conf, self.input_size, size)
        known = (lab >= 0) & (lab < len(self._lut))
        cls = np.where(known, self._lut[np.where(known, lab, 0)], -1).astype(np.int32)
        keep = cls >= 0
        if self._kept is not None:
            keep &= np.isin(cls, self._kept)
        return Detections(xyxy[keep], conf[keep], cls[keep])


def model_xml(model: str) -> Path:
    """The ``.xml`` that ``detector.model`` names: the file itself, or the one ``.xml`` in a folder."""
    p = Path(model)
    if p.is_dir():
        xmls = sorted(p.glob("*.xml"))
        if len(xmls) != 1:
            raise DetectorLoadError(f"detector.model: {p} holds {len(xmls)} .xml files; name one")
        return xmls[0]
    return p


def _image_input(model, xml: Path):
    if len(model.inputs) != 1:
        raise DetectorLoadError(f"detector.model: {xml.name} has {len(model.inputs)} inputs; a detector takes one image")
    inp = model.inputs[0]
    shape = inp.get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4 or shape[1].is_dynamic or shape[1].get_length() != 3:
        raise DetectorLoadError(f"detector.model: {xml.name}'s input is {shape}; expected one image 1x3xHxW (BGR)")
    return inp


def _output_layout(model, xml: Path) -> tuple[str, list[int]]:
    """("ssd", [i]) or ("atss", [boxes, labels]) from the outputs' shapes; anything else is refused."""
    shapes = [o.get_partial_shape() for o in model.outputs]
    ranks = [s.rank.get_length() if s.rank.is_static else -1 for s in shapes]
    for i, s in enumerate(shapes):
        if ranks[i] == 4 and s[3].is_static and s[3].get_length() == 7:
            return "ssd", [i]
    if len(shapes) == 2:
        two = [i for i, r in enumerate(ranks) if r == 2 and shapes[i][1].is_static and shapes[i][1].get_length() == 5]
        one = [i for i, r in enumerate(ranks) if r == 1]
        if len(two) == 1 and len(one) == 1:
            return "atss", [two[0], one[0]]
    raise DetectorLoadError(
        f"detector.model: {xml.name} is not a detector reidd can read: outputs {', '.join(map(str, shapes))}; "
        "expected SSD [1,1,N,7] or ATSS boxes [N,5] + labels [N]")

