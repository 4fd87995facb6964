"""GLAMOR (reidd/reid/glamor.py): the backbone contract, its attention modules, training, export, embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reidd.reid.backbones import PretrainedUnavailable, build_backbone, freeze_stages
from reidd.reid.glamor import Glamor, GlobalAttention, LocalAttention, batch_norm, group_norm
from reidd.reid.model import ModelSpec, build_model
from reidd.reid.registry import BACKBONE_NAMES, BACKBONES
from reidd.train.losses import ReidLoss

from support.samples import embed_with_checkpoint_and_onnx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (64, 64)


def _x(b: int = 2, seed: int = 0, size: tuple[int, int] = SIZE) -> torch.Tensor:
    return torch.randn((b, 3, *size), generator=torch.Generator().manual_seed(seed))


def test_registered_from_scratch_and_named_by_the_cli() -> None:
    for name in ("glamor", "glamor_gn"):
        assert name in BACKBONE_NAMES and BACKBONES[name].imagenet is None and BACKBONES[name].stages == 5
    # pretrained=True has nothing to load: the error says how to train it
    with pytest.raises(PretrainedUnavailable, match=r"trained from scratch.*--pretrained none"):
        build_backbone("glamor", True)


@pytest.mark.parametrize("name", ["glamor", "glamor_gn"])
def test_contract_three_maps_widths_and_stages(name: str) -> None:
    net = build_backbone(name, False)
    assert isinstance(net, Glamor) and net.norm == ("gn" if name == "glamor_gn" else "bn")
    maps = net(_x(2, size=(96, 64)))
    assert [m.shape[1] for m in maps] == net.out_channels == [128, 256, 512]
    assert all(tuple(m.shape[-2:]) == (6, 4) for m in maps)  # stride 16, last stride 1
    assert len(net.stages()) == BACKBONES[name].stages
    norms = {type(m) for m in net.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))}
    assert norms == ({torch.nn.GroupNorm} if name == "glamor_gn" else {torch.nn.BatchNorm2d})
    # every parameter belongs to exactly one stage group, so freeze_stages can freeze all of it
    grouped = {id(p) for g in net.stages() for m in g for p in m.parameters()}
    assert grouped == {id(p) for p in net.parameters()}
    frozen = freeze_stages(net, 1)
    assert not any(p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in net.layer1.parameters())


def test_global_attention_gates_residually() -> None:
    torch.manual_seed(0)
    att = GlobalAttention(32, batch_norm).eval()
    x = torch.rand(2, 32, 16, 16)
    with torch.no_grad():
        gate = att.gate(x)
        y = att(x)
    assert gate.shape == x.shape and float(gate.min()) >= 0 and float(gate.max()) <= 1
    # (1 + gate) * x: never erases the signal, at most doubles it, and it is not a constant scale
    assert torch.all(y >= x - 1e-6) and torch.all(y <= 2 * x + 1e-6)
    ratio = (y / x.clamp_min(1e-3))
    assert float(ratio.std()) > 1e-4


def test_local_attention_parts_start_as_stripes_and_pool_per_part() -> None:
    torch.manual_seed(0)
    att = LocalAttention(64, group_norm, parts=4).eval()
    x = torch.rand(2, 64, 8, 4)
    with torch.no_grad():
        m = att.masks(x)
        y = att(x)
    assert m.shape == (2, 4, 8, 4)
    assert torch.allclose(m.sum(1), torch.ones(2, 8, 4), atol=1e-5)
    # at initialisation part k is the k-th horizontal stripe: its mass peaks in rows 2k, 2k+1 of 8
    rows = m.mean(dim=(0, 3))  # (parts, H)
    assert [int(r.argmax()) // 2 for r in rows] == [0, 1, 2, 3]
    assert y.shape == (2, 64, 8, 4)
    with pytest.raises(ValueError, match="do not split"):
        LocalAttention(30, group_norm, parts=4)


def test_gradients_reach_both_attention_modules_and_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    spec = ModelSpec(backbone="glamor", num_classes=4, input_size=SIZE)
    model = build_model(spec, pretrained=False).train()
    loss_fn = ReidLoss()
    # 4 identities x 4 images: each identity a fixed random image plus a little noise
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4, 3, *SIZE, generator=g)
    x = base.repeat_interleave(4, 0) + 0.1 * torch.randn(16, 3, *SIZE, generator=g)
    pids = torch.arange(4).repeat_interleave(4)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for step in range(8):
        opt.zero_grad()
        loss, _ = loss_fn(model(x), pids)
        loss.backward()
        if step == 0:
            bb = model.backbone
            for mod in (bb.global_attention.channel_mlp, bb.global_attention.spatial, bb.local_attention.mask_logits,
                        bb.local_attention.channel_gate):
                grads = [p.grad for p in mod.parameters()]
                assert all(gr is not None for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0, mod
            assert bb.local_attention.prior_strength.grad is not None
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("name", ["glamor", "glamor_gn"])
def test_multilevel_cbam_onnx_export_matches_torch(tmp_path: Path, name: str) -> None:
    from reidd.reid.export import OnnxEmbedder, export_model

    torch.manual_seed(0)
    spec = ModelSpec(backbone=name, attention=True, multi_level=True, embedding_dim=32, input_size=(64, 48))
    model = build_model(spec, pretrained=False).eval()
    res = export_model(model, tmp_path / "g.onnx", "onnx")
    assert res["embedding_dim"] == 96 and res["max_abs_diff"] < 1e-3
    x = _x(5, seed=3, size=(64, 48))
    with torch.no_grad():
        ref = model(x).numpy()
    got = OnnxEmbedder(tmp_path / "g.onnx", providers=["CPUExecutionProvider"])(x.numpy())
    assert got.shape == (5, 96) and np.abs(got - ref).max() < 1e-3


def test_daemon_embedder_embeds_with_a_glamor_checkpoint_and_its_onnx(tmp_path: Path) -> None:
    from reidd.config import ReidConfig
    from reidd.reid.embedder import Embedder, EmbedderError

    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="glamor_gn", input_size=SIZE, embedding_dim=24), pretrained=False).eval()
    outs = embed_with_checkpoint_and_onnx(model, tmp_path / "g", "glamor_gn", 24)
    assert np.abs(outs[0] - outs[1]).max() < 1e-4
    # without weights a from-scratch backbone is refused with a message naming reid.weights
    with pytest.raises(EmbedderError, match=r"reid\.backbone: 'glamor' has no ImageNet weights.*set reid\.weights to a "
                                            r"checkpoint trained with `reidd train --backbone glamor --pretrained none`"):
        Embedder(ReidConfig(backbone="glamor", runtime="torch"))
