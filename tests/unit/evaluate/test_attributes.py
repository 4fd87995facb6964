"""Attribute re-ranking (reidd.evaluate.attributes) and the ``reidd eval`` options of both new re-rankings, with a
small colour/type IR built here (a nearest-prototype colour classifier on the crop's mean colour)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch  # noqa: F401  (first imported at collection: its import probes ldconfig, a process)

from reidd.evaluate.attributes import (
    COLOURS,
    AttributeModel,
    AttributeModelError,
    AttributeParams,
    Attributes,
    attribute_log_odds,
    attribute_rerank,
)
from reidd.evaluate.cli import register
from reidd.evaluate.metrics import evaluate_distmat
from reidd.train.synthetic import write_toy_reid_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# BGR prototypes of the 7 colours, in the model's order
PROTO = np.array([[1, 1, 1], [0.5, 0.5, 0.5], [0, 1, 1], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32)


def _fake_model(path: Path, types: int = 4, size: int = 72) -> Path:
    """An IR like vehicle-attributes-recognition-barrier-0039: colour posteriors from the nearest prototype of the
    mean colour, ``types`` type scores as raw logits (not probabilities: the loader must softmax them)."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 3, size, size], np.float32, name="input")
    mean = ops.reduce_mean(x, np.array([2, 3]), keep_dims=False)  # (N, 3) BGR in 0..255
    w = (40.0 * PROTO.T / 255.0).astype(np.float32)  # logits -20 |x - p|^2 up to a per-crop constant
    b = (-20.0 * (PROTO**2).sum(axis=1)).astype(np.float32)
    colour = ops.softmax(ops.add(ops.matmul(mean, w, False, False), b), 1)
    kind = ops.matmul(mean, np.linspace(-0.05, 0.05, 3 * types, dtype=np.float32).reshape(3, types), False, False)
    c = ops.reshape(colour, np.array([-1, 7, 1, 1]), False)
    t = ops.reshape(kind, np.array([-1, types, 1, 1]), False)
    c.output(0).get_tensor().set_names({"color"})
    t.output(0).get_tensor().set_names({"type"})
    ov.save_model(ov.Model([c, t], [x], "attributes"), str(path), compress_to_fp16=False)
    return path


@pytest.fixture(scope="module")
def fake_xml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _fake_model(tmp_path_factory.mktemp("attr") / "attributes.xml")


def _crop(bgr: tuple[int, int, int], rng: np.random.Generator, h: int = 50, w: int = 90) -> np.ndarray:
    img = np.clip(np.array(bgr, np.float32) + rng.normal(0, 8, size=(h, w, 3)), 0, 255)
    return img.astype(np.uint8)


def test_model_predicts_colours_in_batches(fake_xml: Path, rng: np.random.Generator) -> None:
    m = AttributeModel(fake_xml, batch_size=32, threads=1)
    assert m.input_size == (72, 72) and m.batch_size == 32
    names = ["red", "blue", "white", "black", "yellow", "green"]
    bgr = {"red": (0, 0, 230), "blue": (230, 0, 0), "white": (240, 240, 240), "black": (10, 10, 10),
           "yellow": (0, 230, 230), "green": (0, 220, 0)}
    crops = [_crop(bgr[n], rng, h=30 + 7 * i, w=40 + 11 * i) for i, n in enumerate(names)]
    a = m.predict(crops)
    assert [COLOURS[i] for i in a.colour.argmax(axis=1)] == names
    np.testing.assert_allclose(a.colour.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(a.type.sum(axis=1), 1.0, atol=1e-6)  # softmax of the raw type logits
    many = [_crop(tuple(int(v) for v in rng.integers(0, 256, 3)), rng) for _ in range(70)]  # 3 batches, last partial
    batched = m.predict(many)
    alone = AttributeModel(fake_xml, batch_size=1, threads=1).predict(many)
    np.testing.assert_allclose(batched.colour, alone.colour, atol=1e-5)
    np.testing.assert_allclose(batched.type, alone.type, atol=1e-5)
    assert len(m.predict([])) == 0


def test_model_reads_files_in_bgr(fake_xml: Path, tmp_path: Path, rng: np.random.Generator) -> None:
    paths = []
    for i, colour in enumerate([(0, 0, 230), (230, 0, 0)]):  # red, blue (BGR)
        paths.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(paths[-1], _crop(colour, rng))
    a = AttributeModel(fake_xml).predict_files(paths)
    assert [COLOURS[i] for i in a.colour.argmax(axis=1)] == ["red", "blue"]


def test_bad_models_are_refused_in_one_line(fake_xml: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.xml"
    junk.write_text("<net>not really</net>")
    (tmp_path / "two").mkdir()
    for n in ("a.xml", "b.xml"):
        (tmp_path / "two" / n).write_text("x")
    notxml = tmp_path / "model.onnx"
    notxml.write_bytes(b"\0" * 10)
    wrong = _fake_model(tmp_path / "wrong.xml", types=5)
    nobin = tmp_path / "nobin.xml"
    nobin.write_bytes(fake_xml.read_bytes())  # its weights are not beside it
    cases = [(tmp_path / "missing.xml", "no such file"), (junk, "not an OpenVINO IR model"),
             (nobin, "not a readable OpenVINO model"),
             (tmp_path / "two", "holds 2 .xml files"), (notxml, "expected an OpenVINO IR"),
             (wrong, "not a vehicle attributes model")]
    for path, what in cases:
        with pytest.raises(AttributeModelError, match=what) as err:
            AttributeModel(path)
        assert "\n" not in str(err.value) and path.name in str(err.value)
    assert AttributeModel(fake_xml.parent).path == fake_xml  # a folder with one .xml names it


def test_log_odds_is_the_likelihood_ratio() -> None:
    q = Attributes(np.array([[0.9, 0.1]]), np.array([[0.5, 0.5]]))
    g = Attributes(np.array([[0.8, 0.2], [0.1, 0.9]]), np.array([[0.5, 0.5], [0.5, 0.5]]))
    prior = Attributes(np.array([[0.5, 0.5]]), np.array([[0.5, 0.5]]))
    lo = attribute_log_odds(q, g, AttributeParams(clip=10), prior=prior)
    # sum_c p_q(c) p_g(c) / pi(c); the uninformative type adds log(1) = 0
    np.testing.assert_allclose(lo, [[np.log(0.9 * 0.8 / 0.5 + 0.1 * 0.2 / 0.5),
                                     np.log(0.9 * 0.1 / 0.5 + 0.1 * 0.9 / 0.5)]])
    assert lo[0, 0] > 0 > lo[0, 1]
    # the default prior is the mean posterior of the crops given: here (0.6, 0.4)
    np.testing.assert_allclose(attribute_log_odds(q, g, AttributeParams(clip=10, type=False)),
                               [[np.log(0.9 * 0.8 / 0.6 + 0.1 * 0.2 / 0.4), np.log(0.9 * 0.1 / 0.6 + 0.1 * 0.9 / 0.4)]])
    assert attribute_log_odds(q, g, AttributeParams(clip=0.1)).max() == pytest.approx(0.1)


def test_attributes_fix_a_ranking_appearance_gets_wrong() -> None:
    """The true match (red, like the query) is a little further in appearance than a white vehicle."""
    red, white = np.eye(7)[3] * 0.94 + 0.01, np.eye(7)[0] * 0.94 + 0.01
    car = np.array([0.97, 0.01, 0.01, 0.01])
    q = Attributes(red[None], car[None])
    g = Attributes(np.stack([white, red, white, white]), np.stack([car] * 4))
    dist = np.array([[0.28, 0.30, 0.60, 0.70]], np.float32)
    pid_q, pid_g, cams = np.array([1]), np.array([2, 1, 3, 4]), (np.array([0]), np.ones(4, int))
    before = evaluate_distmat(dist, pid_q, pid_g, *cams, max_rank=4, progress=False).as_dict()
    out = attribute_rerank(dist, q, g)
    after = evaluate_distmat(out, pid_q, pid_g, *cams, max_rank=4, progress=False).as_dict()
    assert before["rank1"] == 0.0 and after["rank1"] == 1.0
    assert out.dtype == np.float32 and out[0, 1] < dist[0, 1] and out[0, 0] > dist[0, 0]
    np.testing.assert_allclose(attribute_rerank(dist, q, g, AttributeParams(weight=0.0)), dist)
    with pytest.raises(ValueError, match="shape"):
        attribute_rerank(dist[:, :3], q, g)


def test_params_and_pooling() -> None:
    for bad in (dict(weight=-1.0), dict(weight=float("inf")), dict(clip="2"), dict(colour=False, type=False)):
        with pytest.raises(ValueError):
            AttributeParams(**bad).check()
    a = Attributes(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), np.array([[1.0], [1.0], [1.0]]))
    p = a.pooled(["t9", "t1", "t9"])  # tracks in order of first appearance, as average_by_track
    np.testing.assert_allclose(p.colour, [[0.75, 0.25], [0.0, 1.0]])


# --------------------------------------------------------------------------- reidd eval
def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reidd")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_reports_the_new_reranks(fake_xml: Path, tmp_path: Path) -> None:
    data = write_toy_reid_dataset(tmp_path / "toy", num_ids=10, size=(32, 32), seed=4)
    out = tmp_path / "eval"
    rc = _run(["eval", "--data", str(data), "--val-identities", "5", "--imagenet", "efficientnet_lite0",
               "--input-size", "64", "64", "--rerank", "none", "diffusion", "attributes", "kreciprocal+attributes",
               "diffusion+attributes", "--k1", "4", "--k2", "2", "--diffusion-k", "3", "--attribute-model",
               str(fake_xml), "--out", str(out), "--no-progress"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert [r["rerank"] for r in res["results"]] == ["none", "diffusion", "attributes", "kreciprocal+attributes",
                                                      "diffusion+attributes"]
    assert all(0.0 <= r["mAP"] <= 1.0 for r in res["results"])
    assert res["diffusion"]["k"] == 3 and res["attributes"]["model"] == str(fake_xml)


@pytest.mark.parametrize("argv, what", [
    (["--rerank", "attributes"], "--attribute-model: --rerank attributes needs"),
    (["--rerank", "diffusion+attributes", "--attribute-model", "nowhere/attr.xml"], "--attribute-model: nowhere"),
    (["--rerank", "diffusion", "--diffusion-alpha", "1.5"], "--diffusion-alpha: expected"),
    (["--rerank", "diffusion", "--diffusion-k", "0"], "--diffusion-k: expected"),
    (["--rerank", "attributes", "--attribute-weight", "-1"], "--attribute-weight: expected"),
])
def test_eval_refuses_bad_rerank_options(argv: list[str], what: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rc = _run(["eval", "--data", str(tmp_path / "no-data"), "--imagenet", "efficientnet_lite0", *argv,
               "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"error: {what}") and "\n" not in err  # checked before the data is read
