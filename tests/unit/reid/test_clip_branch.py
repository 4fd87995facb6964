"""clip_vit (reidd/reid/clip_branch.py): a tiny random CLIP ViT + enhancement + Lite0 fusion; the CLIP weight
loader (OpenAI/open_clip key names, weights_only, clear errors); training, export, embedding."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from reidd.reid import clip_branch as cb
from reidd.reid.backbones import PretrainedUnavailable, build_backbone, efficientnet_lite0_weights_path, freeze_stages
from reidd.reid.model import ModelSpec, build_model
from reidd.reid.registry import BACKBONE_NAMES, BACKBONES
from reidd.train.losses import ReidLoss

from support.samples import embed_with_checkpoint_and_onnx

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = cb.ClipArch(patch=8, width=32, layers=2, heads=2, embed_dim=16, image_size=64)
SIZE = (64, 48)  # not the weights' 64x64 grid: positions are resampled


@pytest.fixture(autouse=True)
def tiny_clip(monkeypatch):
    """Every clip_vit built in these tests is a tiny ViT (8-px patches, width 32, 2 layers)."""
    monkeypatch.setattr(cb, "CLIP_VIT_ARCH", TINY)


def _x(b: int = 2, seed: int = 0, size: tuple[int, int] = SIZE) -> torch.Tensor:
    return torch.randn((b, 3, *size), generator=torch.Generator().manual_seed(seed))


def _reference_visual(vit: cb.ClipVisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's visual forward written with torch's nn.MultiheadAttention (sequence-first), loading our
    blocks' attention state dicts: the class-token embedding it returns must equal ours."""
    a = vit.arch
    t = vit.conv1(x).flatten(2).permute(0, 2, 1)
    cls = vit.class_embedding.view(1, 1, -1).expand(t.shape[0], 1, -1)
    t = torch.cat([cls, t], 1) + vit.positional_embedding
    t = vit.ln_pre(t).permute(1, 0, 2)  # (L, N, E)
    for blk in vit.transformer.resblocks:
        mha = nn.MultiheadAttention(a.width, a.heads)
        mha.load_state_dict(blk.attn.state_dict(), strict=True)  # same parameter names and shapes
        h = blk.ln_1(t)
        t = t + mha(h, h, h, need_weights=False)[0]
        h = blk.mlp.c_fc(blk.ln_2(t))
        t = t + blk.mlp.c_proj(h * torch.sigmoid(1.702 * h))
    return vit.ln_post(t.permute(1, 0, 2)[:, 0]) @ vit.proj


def _openai_file(vit: cb.ClipVisionTransformer, path: Path, *, prefix: str = "visual.") -> Path:
    sd = {prefix + k: v.clone() for k, v in vit.state_dict().items()}
    if "visual." in prefix:  # a whole CLIP model: its text tower (same key names, no prefix) is ignored
        sd["token_embedding.weight"] = torch.zeros(10, 8)
        sd["transformer.resblocks.0.ln_1.weight"] = torch.ones(8)
    torch.save(sd, path)
    return path


# --------------------------------------------------------------------------- contract
def test_registered_with_clip_normalisation_and_contract() -> None:
    assert "clip_vit" in BACKBONE_NAMES
    entry = BACKBONES["clip_vit"]
    assert entry.mean == cb.CLIP_MEAN and entry.std == cb.CLIP_STD and entry.stages == 11
    net = build_backbone("clip_vit", False)
    assert isinstance(net, cb.ClipSENet) and net.arch == TINY
    with torch.no_grad():
        maps = net(_x(2))
    assert [m.shape[1] for m in maps] == net.out_channels == [112, 16, 1280 + 16]
    assert tuple(maps[1].shape[-2:]) == (8, 6)  # the CLIP patch grid
    assert tuple(maps[0].shape[-2:]) == (4, 3) and tuple(maps[2].shape[-2:]) == (2, 2)  # Lite0 strides 16, 32
    assert len(net.stages()) == entry.stages
    grouped = {id(p) for g in net.stages() for m in g for p in m.parameters()}
    assert grouped == {id(p) for p in net.parameters()}
    frozen = freeze_stages(net, 1)  # exactly the CLIP encoder
    assert frozen == [net.clip] and not any(p.requires_grad for p in net.clip.parameters())
    assert all(p.requires_grad for p in net.appearance.parameters())
    with pytest.raises(ValueError, match="multiple of the patch size"):
        net(_x(1, size=(60, 48)))


def test_vit_layout_is_openai_clip() -> None:
    torch.manual_seed(0)
    vit = cb.ClipVisionTransformer(TINY).eval()
    x = _x(3, size=(64, 64))  # the weights' own grid
    with torch.no_grad():
        cls, tokens = vit(x)
        ref = _reference_visual(vit, x)
    assert tokens.shape == (3, 16, 8, 8)
    assert torch.allclose(cls, ref, atol=1e-5)
    names = set(vit.state_dict())
    for key in ("conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "proj",
                "transformer.resblocks.1.attn.in_proj_weight", "transformer.resblocks.1.attn.out_proj.bias",
                "transformer.resblocks.1.mlp.c_fc.weight", "transformer.resblocks.1.mlp.c_proj.bias", "ln_post.bias"):
        assert key in names


# --------------------------------------------------------------------------- loading CLIP weights
class NotATensor:
    """Any pickled object other than tensors and containers: torch.load(weights_only=True) refuses it."""


def test_loader_reads_openai_and_open_clip_files_and_resamples_positions(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = cb.ClipVisionTransformer(TINY)
    x = _x(2, size=(64, 64))
    with torch.no_grad():
        want = src(x)[0]
    for name, prefix in (("openai.pt", "visual."), ("open_clip.bin", "module.visual."), ("bare.pt", "")):
        dst = cb.ClipVisionTransformer(TINY)
        cb.load_clip_visual_weights(dst, _openai_file(src, tmp_path / name, prefix=prefix))
        with torch.no_grad():
            assert torch.allclose(dst(x)[0], want, atol=1e-6), name
    # a model trained at another resolution (here an 80-px grid of 10x10): positions resampled to 8x8
    big = cb.ClipVisionTransformer(cb.ClipArch(**{**TINY.__dict__, "image_size": 80}))
    dst = cb.ClipVisionTransformer(TINY)
    cb.load_clip_visual_weights(dst, _openai_file(big, tmp_path / "big.pt"))
    assert dst.positional_embedding.shape == (65, 32)
    assert torch.allclose(dst.positional_embedding[0], big.positional_embedding[0])


def test_loader_errors_are_clear(tmp_path: Path) -> None:
    vit = cb.ClipVisionTransformer(TINY)
    with pytest.raises(FileNotFoundError, match="CLIP weights file not found"):
        cb.load_clip_visual_weights(vit, tmp_path / "nope.pt")
    other = cb.ClipVisionTransformer(cb.ClipArch(**{**TINY.__dict__, "layers": 3, "width": 48, "heads": 3}))
    with pytest.raises(ValueError, match=r"not the CLIP visual tower.*width 32, 2 layers.*unexpected.*other shapes"):
        cb.load_clip_visual_weights(vit, _openai_file(other, tmp_path / "other.pt"))
    resnet_like = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}, resnet_like)
    with pytest.raises(ValueError, match=r"missing"):
        cb.load_clip_visual_weights(vit, resnet_like)
    evil = tmp_path / "evil.pt"
    torch.save({"visual.conv1.weight": torch.zeros(1), "x": NotATensor()}, evil)
    with pytest.raises(ValueError, match=r"weights_only"):
        cb.load_clip_visual_weights(vit, evil)
    # an OpenAI .pt is a TorchScript archive: the message says how to convert it
    scripted = tmp_path / "ViT-B-16.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(nn.Linear(2, 2)), str(scripted))
    with pytest.raises(ValueError, match=r"TorchScript archive.*not a state dict.*torch\.jit\.load"):
        cb.load_clip_visual_weights(vit, scripted)


def test_pretrained_true_explains_and_path_loads_both_branches(tmp_path: Path) -> None:
    lite0 = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    stem = lite0["_conv_stem.weight"]
    with pytest.raises(PretrainedUnavailable, match=r"CLIP weights cannot be downloaded.*--pretrained PATH"):
        build_backbone("clip_vit", True)
    with pytest.warns(UserWarning, match="CLIP weights cannot be downloaded"):
        net = build_backbone("clip_vit", True, allow_random=True)
    assert torch.equal(net.appearance._conv_stem.weight, stem)  # the CNN branch got its ImageNet weights
    torch.manual_seed(2)
    src = cb.ClipVisionTransformer(TINY)
    net = build_backbone("clip_vit", str(_openai_file(src, tmp_path / "clip.pt")))
    assert torch.equal(net.clip.proj, src.proj) and torch.equal(net.appearance._conv_stem.weight, stem)


# --------------------------------------------------------------------------- training / export / daemon
def test_gradients_reach_enhancement_and_fusion_and_a_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="clip_vit", num_classes=4, input_size=SIZE, multi_level=True),
                        pretrained=False).train()
    g = torch.Generator().manual_seed(1)
    base = torch.randn(4, 3, *SIZE, generator=g)
    x = base.repeat_interleave(4, 0) + 0.1 * torch.randn(16, 3, *SIZE, generator=g)
    pids = torch.arange(4).repeat_interleave(4)
    loss_fn = ReidLoss()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for step in range(8):
        opt.zero_grad()
        loss, _ = loss_fn(model(x), pids)
        loss.backward()
        if step == 0:
            bb = model.backbone
            for mod in (bb.enhance.detail, bb.enhance.channel_gate, bb.fusion.gate, bb.clip.transformer, bb.clip.conv1):
                grads = [p.grad for p in mod.parameters()]
                assert all(gr is not None for gr in grads) and sum(float(gr.abs().sum()) for gr in grads) > 0, mod
            assert bb.enhance.where_scale.grad is not None and bb.clip.positional_embedding.grad is not None
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


def test_renormalisation_feeds_lite0_its_own_statistics() -> None:
    net = build_backbone("clip_vit", False).eval()
    pixels = torch.rand(1, 3, 64, 48)
    clip_in = (pixels - torch.tensor(cb.CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(cb.CLIP_STD).view(1, 3, 1, 1)
    lite_in = (pixels - torch.tensor(cb.LITE0_MEAN).view(1, 3, 1, 1)) / torch.tensor(cb.LITE0_STD).view(1, 3, 1, 1)
    assert torch.allclose(clip_in * net._renorm_a + net._renorm_b, lite_in, atol=1e-5)


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    from reidd.reid.export import OnnxEmbedder, export_model

    torch.manual_seed(0)
    spec = ModelSpec(backbone="clip_vit", attention=True, multi_level=True, embedding_dim=24, input_size=SIZE)
    model = build_model(spec, pretrained=False).eval()
    res = export_model(model, tmp_path / "c.onnx", "onnx")
    assert res["embedding_dim"] == 72 and res["max_abs_diff"] < 1e-3
    x = _x(4, seed=5)
    with torch.no_grad():
        ref = model(x).numpy()
    got = OnnxEmbedder(tmp_path / "c.onnx", providers=["CPUExecutionProvider"])(x.numpy())
    assert got.shape == (4, 72) and np.abs(got - ref).max() < 1e-3


def test_daemon_embedder_embeds_with_a_clip_vit_checkpoint_and_its_onnx(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(backbone="clip_vit", input_size=SIZE), pretrained=False).eval()
    outs = embed_with_checkpoint_and_onnx(model, tmp_path / "c", "clip_vit", 1296)
    assert np.abs(outs[0] - outs[1]).max() < 1e-4
