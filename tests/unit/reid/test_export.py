"""ONNX / TorchScript export of the embedding model: numerical agreement and metadata round trip."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reidd.reid.checkpoint import save_checkpoint
from reidd.reid.export import OnnxEmbedder, export_model, load_torchscript, read_onnx_spec, read_torchscript_spec
from reidd.reid.model import ModelSpec, build_model
from reidd.train.cli import register


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    spec = ModelSpec(backbone="efficientnet_lite0", attention=True, multi_level=True, embedding_dim=32,
                     num_classes=3, input_size=(64, 48))
    m = build_model(spec, pretrained=True)
    m.train()
    with torch.no_grad():
        m(torch.randn(6, 3, 64, 48))  # non-trivial BatchNorm statistics in the necks
    return m.eval()


def test_onnx_matches_pytorch_and_keeps_spec(tmp_path: Path, model: torch.nn.Module) -> None:
    info = export_model(model, tmp_path / "m.onnx", "onnx")
    assert info["max_abs_diff"] < 1e-3
    spec = read_onnx_spec(tmp_path / "m.onnx")
    assert spec == model.spec and spec.input_size == (64, 48) and spec.mean == model.spec.mean
    emb = OnnxEmbedder(tmp_path / "m.onnx")
    x = torch.randn(5, 3, 64, 48, generator=torch.Generator().manual_seed(3))  # another batch size
    with torch.no_grad():
        ref = model(x).numpy()
    got = emb(x.numpy())
    assert got.shape == (5, 96) and np.abs(got - ref).max() < 1e-3
    with pytest.raises(ValueError, match="expected input"):
        emb(np.zeros((1, 3, 32, 32), np.float32))


def test_torchscript_matches_pytorch(tmp_path: Path, model: torch.nn.Module) -> None:
    info = export_model(model, tmp_path / "m.torchscript", "torchscript")
    assert info["max_abs_diff"] < 1e-3
    assert read_torchscript_spec(tmp_path / "m.torchscript") == model.spec
    ts = load_torchscript(tmp_path / "m.torchscript")
    x = torch.randn(7, 3, 64, 48)
    with torch.no_grad():
        assert torch.allclose(ts(x), model(x), atol=1e-4)


def test_export_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = save_checkpoint(tmp_path / "r18.pt",
                           build_model(ModelSpec(backbone="resnet18", embedding_dim=16, input_size=(64, 64)),
                                       pretrained=False))
    parser = argparse.ArgumentParser(prog="reidd")
    register(parser.add_subparsers())
    args = parser.parse_args(["export", "--model", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "r.onnx")])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "max abs diff" in out
    info = json.loads(out.strip().splitlines()[-1])
    assert info["max_abs_diff"] < 1e-3 and info["embedding_dim"] == 16
    assert read_onnx_spec(tmp_path / "r.onnx").backbone == "resnet18"
    bad = tmp_path / "x.pt"
    torch.save({"a": torch.ones(1)}, bad)
    args = parser.parse_args(["export", "--model", str(bad), "--out", str(tmp_path / "x.onnx")])
    assert args.func(args) == 2
    assert "x.pt: not a reidd checkpoint" in capsys.readouterr().err
