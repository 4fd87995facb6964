"""``reidd eval`` in-process on a generated dataset: table, results.json, cmc.png, track modes, errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from reidd.evaluate.cli import register
from reidd.reid.checkpoint import save_checkpoint
from reidd.reid.model import ModelSpec, build_model
from reidd.train.synthetic import write_toy_reid_dataset


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="reidd")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_two_models_metrics_and_reranking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_toy_reid_dataset(tmp_path / "toy", num_ids=10, size=(32, 32), seed=4)
    # a checkpoint holding the ImageNet-initialised model must score exactly like --imagenet
    ckpt = save_checkpoint(tmp_path / "lite.pt", build_model(ModelSpec(input_size=(64, 64))))
    out = tmp_path / "eval"
    rc = _run(["eval", "--data", str(data), "--val-identities", "5", "--model", str(ckpt), "--imagenet",
               "efficientnet_lite0", "--input-size", "64", "64", "--metric", "both", "--rerank", "none", "kreciprocal",
               "qe", "--k1", "4", "--k2", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    table = capsys.readouterr().out
    assert "mAP" in table and "kreciprocal" in table and "ensemble(" in table
    res = json.loads((out / "results.json").read_text())
    rows = res["results"]
    assert res["num_query"] == 10 and res["num_gallery"] == 10  # 5 ids x 2 cams x 2 images, split per camera
    assert len(rows) == 3 * 2 * 3  # (2 models + ensemble) x 2 metrics x 3 re-rankings
    for r in rows:
        assert 0.0 < r["mAP"] <= 1.0 and 0.0 <= r["mINP"] <= r["mAP"] + 1e-9 and r["rank1"] <= r["rank5"]
        assert r["num_valid"] == 10
    by = {(r["model"], r["metric"], r["rerank"]): r for r in rows}
    a = by[(f"{ckpt.parent.name}/lite.pt", "cosine", "none")]
    b = by[("imagenet:efficientnet_lite0", "cosine", "none")]
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-6)
    # euclidean on L2-normalised features ranks like cosine
    assert by[(b["model"], "euclidean", "none")]["mAP"] == pytest.approx(b["mAP"], abs=1e-6)
    # identities are distinct colour patterns: ImageNet features already retrieve most of them
    assert b["rank5"] >= 0.8 and b["mAP"] > 0.5
    assert (out / "cmc.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_track_modes_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_toy_reid_dataset(tmp_path / "toy", num_ids=6, size=(32, 32), seed=1)
    ckpt = save_checkpoint(tmp_path / "r.pt", build_model(ModelSpec(backbone="resnet18", input_size=(64, 64)),
                                                          pretrained=False))
    out = tmp_path / "ev"
    assert _run(["eval", "--data", str(data), "--val-identities", "3", "--model", str(ckpt), "--mode", "track",
                 "--rerank", "none", "track-avg", "dba", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["mode"] == "track" and {r["rerank"] for r in res["results"]} == {"none", "track-avg", "dba"}
    capsys.readouterr()
    assert _run(["eval", "--data", str(tmp_path / "missing"), "--imagenet", "efficientnet_lite0",
                 "--out", str(out)]) == 2
    assert "missing" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert _run(["eval", "--data", str(data), "--model", str(bad), "--out", str(out)]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert _run(["eval", "--data", str(data), "--out", str(out)]) == 2
