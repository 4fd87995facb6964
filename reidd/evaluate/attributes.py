"""Attribute re-ranking: colour and type of every crop from Intel's Open Model Zoo
``vehicle-attributes-recognition-barrier-0039`` (OpenVINO IR; 72x72 BGR crop in, probabilities of 7 colours
and 4 types out), combined with the appearance distance as evidence for "same vehicle".

The combination is a likelihood ratio. For one attribute with prior ``pi(c)`` over its values and a model
whose outputs are posteriors ``p(c | crop)``, the two crops of one vehicle share one true value ``c``, two
different vehicles draw theirs independently, so (the crops' observations independent given the value)

    P(crops | same vehicle) / P(crops | different vehicles) = sum_c p_q(c) p_g(c) / pi(c).

Its logarithm is > 0 when the two crops agree on a value more than chance would, < 0 when they disagree.
Colour and type are treated as independent, so their log ratios add. The re-ranked distance is

    d' = d - weight * clip(log LR_colour + log LR_type, -clip, clip)

with ``d`` any appearance distance (plain, k-reciprocal or diffusion): an additive log-odds correction, the
appearance distance standing in for the appearance log-odds. ``pi`` is the mean posterior over the query and
gallery crops being ranked (transductive, as k-reciprocal re-ranking is); the clip bounds what one confident
mistake of the attribute model (a white car at dusk called grey) can cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

COLOURS = ("white", "gray", "yellow", "red", "green", "blue", "black")
TYPES = ("car", "bus", "truck", "van")


class AttributeModelError(ValueError):
    """The attribute model cannot be loaded or run; the message names the file and is one line."""


@dataclass(frozen=True)
class AttributeParams:
    """How :func:`attribute_rerank` weighs the attributes (``reidd eval --attribute-*``)."""

    weight: float = 0.05  #: distance units per unit of log likelihood ratio
    clip: float = 3.0  #: bound on the summed log likelihood ratio of one pair
    colour: bool = True  #: use the colour
    type: bool = True  #: use the type

    def check(self) -> AttributeParams:
        for name in ("weight", "clip"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) \
                    or v < 0:
                raise ValueError(f"{name}: expected a finite number >= 0, got {v!r}")
        if not (self.colour or self.type):
            raise ValueError("colour, type: at least one attribute must be used")
        return self


@dataclass
class Attributes:
    """Posteriors of each crop: ``colour`` (n, 7) and ``type`` (n, 4), rows summing to 1."""

    colour: np.ndarray
    type: np.ndarray

    def __len__(self) -> int:
        return len(self.colour)

    def take(self, index: Any) -> Attributes:
        return Attributes(self.colour[index], self.type[index])

    def pooled(self, groups: Any) -> Attributes:
        """Mean posterior per group (e.g. per track), groups in order of first appearance."""
        g = np.asarray(groups)
        _, first, inv = np.unique(g, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        remap = np.empty(len(first), dtype=np.int64)
        remap[order] = np.arange(len(first))
        code = remap[inv.reshape(-1)]
        counts = np.bincount(code, minlength=len(first))[:, None]

        def mean(x: np.ndarray) -> np.ndarray:
            out = np.zeros((len(first), x.shape[1]))
            np.add.at(out, code, x)
            return out / counts

        return Attributes(mean(self.colour), mean(self.type))


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _is_ir(xml: Path) -> bool:
    """Whether OpenVINO's IR reader takes the file (True when that cannot be asked: read_model decides)."""
    try:
        from openvino.frontend import FrontEndManager

        return bool(FrontEndManager().load_by_framework("ir").supported(str(xml)))
    except Exception:
        return True


def _posterior(x: np.ndarray) -> np.ndarray:
    """Rows as probabilities: kept when they already are, else a softmax of the logits."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if (x >= 0).all() and np.allclose(x.sum(axis=1), 1.0, atol=1e-2):
        return x / x.sum(axis=1, keepdims=True)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class AttributeModel:
    """The colour/type model compiled for the CPU, run on batches of crops.

    ``path`` is the ``.xml`` (its ``.bin`` beside it) or a folder holding exactly one ``.xml``. Any IR with one
    image input (1x3xHxW, BGR, 0-255) and two outputs of 7 and 4 channels is accepted (the outputs are found by
    their sizes); anything else raises :class:`AttributeModelError`.
    """

    def __init__(self, path: str | Path, batch_size: int = 32, threads: int | None = None):
        try:
            import openvino as ov
        except ImportError as exc:  # pragma: no cover - openvino is a dependency of reidd
            raise AttributeModelError("the attribute model needs the openvino package (pip install openvino)") from exc
        from reidd.device import cpu_threads

        xml = Path(path)
        if xml.is_dir():
            found = sorted(xml.glob("*.xml"))
            if len(found) != 1:
                raise AttributeModelError(f"{xml} holds {len(found)} .xml files; name one")
            xml = found[0]
        if not xml.is_file():
            raise AttributeModelError(f"{xml}: no such file")
        if xml.suffix.lower() != ".xml":
            raise AttributeModelError(f"{xml}: expected an OpenVINO IR .xml (with its .bin beside it)")
        self.path = xml
        if not _is_ir(xml):  # asked first: OpenVINO would otherwise try its other readers, which log to stderr
            raise AttributeModelError(f"{xml} is not an OpenVINO IR model (an .xml with a <net> of layers, its .bin "
                                      "beside it)")
        core = ov.Core()
        try:
            model = core.read_model(str(xml))
        except Exception as exc:  # OpenVINO raises RuntimeError for a junk .xml or a .bin that does not fit it
            raise AttributeModelError(f"{xml} is not a readable OpenVINO model: {_one_line(exc)}") from exc
        if len(model.inputs) != 1:
            raise AttributeModelError(f"{xml.name} has {len(model.inputs)} inputs; expected one image")
        shape = model.inputs[0].get_partial_shape()
        if shape.rank.is_dynamic or shape.rank.get_length() != 4 or shape[1].is_dynamic or shape[1].get_length() != 3 \
                or shape[2].is_dynamic or shape[3].is_dynamic:
            raise AttributeModelError(f"{xml.name}'s input is {shape}; expected one image 1x3xHxW (BGR)")
        self.input_size = (shape[3].get_length(), shape[2].get_length())  # (width, height)
        sizes = []
        for o in model.outputs:
            s = o.get_partial_shape()
            sizes.append(s[1].get_length() if s.rank.is_static and s.rank.get_length() >= 2 and s[1].is_static else -1)
        if sorted(sizes) != [4, 7]:
            raise AttributeModelError(
                f"{xml.name} is not a vehicle attributes model: outputs of {sizes} channels; expected colour (7) and "
                "type (4), as vehicle-attributes-recognition-barrier-0039")
        self.batch_size = max(1, int(batch_size))
        name = model.inputs[0].get_any_name()
        try:
            model.reshape({name: [self.batch_size, 3, self.input_size[1], self.input_size[0]]})
        except Exception:
            self.batch_size = 1  # a model with a fixed batch runs one crop per request
        ppp = ov.preprocess.PrePostProcessor(model)
        ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        model = ppp.build()
        try:
            self._compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": cpu_threads(threads)})
        except Exception as exc:
            raise AttributeModelError(f"{xml} cannot be compiled for the CPU: {_one_line(exc)}") from exc
        self._colour = self._compiled.outputs[sizes.index(7)]
        self._type = self._compiled.outputs[sizes.index(4)]
        self._request = self._compiled.create_infer_request()
        try:
            self.predict([np.zeros((8, 8, 3), np.uint8)])
        except Exception as exc:
            raise AttributeModelError(f"{xml} loads but cannot run: {_one_line(exc)}") from exc

    def predict(self, crops_bgr: list[np.ndarray]) -> Attributes:
        """Colour and type posteriors of HxWx3 uint8 BGR crops (any size: each is resized to the input)."""
        import cv2

        colour, kind = [], []
        b = self.batch_size
        for s in range(0, len(crops_bgr), b):
            part = crops_bgr[s : s + b]
            blob = np.zeros((b, self.input_size[1], self.input_size[0], 3), np.uint8)
            for i, img in enumerate(part):
                blob[i] = cv2.resize(np.ascontiguousarray(img), self.input_size, interpolation=cv2.INTER_LINEAR)
            res = self._request.infer({0: blob})
            colour.append(np.asarray(res[self._colour]).reshape(b, -1)[: len(part)])
            kind.append(np.asarray(res[self._type]).reshape(b, -1)[: len(part)])
        if not colour:
            return Attributes(np.zeros((0, 7)), np.zeros((0, 4)))
        return Attributes(_posterior(np.concatenate(colour)), _posterior(np.concatenate(kind)))

    def predict_files(self, paths: list[str]) -> Attributes:
        """:meth:`predict` on image files, read a batch at a time."""
        from reidd.reid.features import read_rgb

        parts = []
        step = max(self.batch_size, 64)
        for s in range(0, len(paths), step):
            parts.append(self.predict([read_rgb(p)[:, :, ::-1] for p in paths[s : s + step]]))
        if not parts:
            return Attributes(np.zeros((0, 7)), np.zeros((0, 4)))
        return Attributes(np.concatenate([p.colour for p in parts]), np.concatenate([p.type for p in parts]))


def _log_ratio(pq: np.ndarray, pg: np.ndarray, prior: np.ndarray) -> np.ndarray:
    return np.log(np.maximum((pq / prior[None, :]) @ pg.T, 1e-12))


def attribute_log_odds(q: Attributes, g: Attributes, params: AttributeParams | None = None,
                       prior: Attributes | None = None) -> np.ndarray:
    """(nq, ng) clipped log likelihood ratio of "same vehicle" from the attributes (see the module's text).

    ``prior``: the attribute priors as an :class:`Attributes` of one row; default the mean posterior of all
    the crops given, floored at 1e-3.
    """
    p = (params or AttributeParams()).check()
    out = np.zeros((len(q), len(g)))
    for use, a, b, pr in ((p.colour, q.colour, g.colour, None if prior is None else prior.colour),
                          (p.type, q.type, g.type, None if prior is None else prior.type)):
        if not use:
            continue
        if pr is None:
            pr = np.concatenate([a, b]).mean(axis=0)
        pr = np.maximum(np.asarray(pr, dtype=np.float64).reshape(-1), 1e-3)
        out += _log_ratio(np.asarray(a, np.float64), np.asarray(b, np.float64), pr / pr.sum())
    return np.clip(out, -p.clip, p.clip)


def attribute_rerank(dist: np.ndarray, q: Attributes, g: Attributes, params: AttributeParams | None = None
                     ) -> np.ndarray:
    """``dist - weight * log_odds`` as float32: an appearance distance (nq, ng) corrected by the attributes."""
    d = np.asarray(dist)
    if d.ndim != 2 or d.shape != (len(q), len(g)):
        raise ValueError(f"dist: expected shape ({len(q)}, {len(g)}) to match the attributes, got {d.shape}")
    p = (params or AttributeParams()).check()
    return (d - p.weight * attribute_log_odds(q, g, p)).astype(np.float32)
