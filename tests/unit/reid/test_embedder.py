"""The daemon's embedder: real forward passes, pooling, runtimes, checkpoints and ONNX weights."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from reidd.config import ReidConfig
from reidd.reid.embedder import BatchingEmbedder, Embedder, EmbedderError, pool_groups
from reidd.types import BoxRecord, Crop, Tracklet


pytestmark = pytest.mark.usefixtures("one_torch_thread")


SIZE = (64, 64)


def tracklet(cam: str, local_id: int, n_crops: int, seed: int) -> Tracklet:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)
    crops = []
    for i in range(n_crops):  # the same vehicle with a little noise and a varying size
        img = np.clip(base.astype(int) + rng.integers(-10, 10, base.shape), 0, 255).astype(np.uint8)
        img = img[: 36 + i, : 60 + 2 * i]
        crops.append(Crop(i, i / 10, (0, 0, img.shape[1], img.shape[0]), img, quality=0.9 - 0.1 * i))
    boxes = [BoxRecord(i, i / 10, (0, 0, 10, 10), 0.9, 2) for i in range(max(n_crops, 3))]
    return Tracklet(cam, local_id, 0, boxes, crops, "lost", 2)


def test_pool_groups_weighted_and_plain() -> None:
    f = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, 5.0]])
    owner = torch.tensor([0, 0, 1])  # rows 0-1 are one tracklet's crops, row 2 another's
    plain = pool_groups(f, owner, None, 2)  # rows normalised first: mean of (1,0) and (0,1)
    assert torch.allclose(plain[0], torch.tensor([1.0, 1.0]) / 2**0.5) and torch.allclose(plain[1], torch.tensor([0.0, 1.0]))
    weighted = pool_groups(f, owner, torch.tensor([3.0, 1.0, 1.0]), 2)  # 3:1 towards the first row, re-normalised
    assert torch.allclose(weighted[0], torch.tensor([3.0, 1.0]) / 10**0.5, atol=1e-5)


@pytest.fixture(scope="module")
def embedders() -> dict[str, Embedder]:
    # fp32 in PyTorch too: 'auto' means bf16 on CPUs with native bf16, which rounds differently from onnxruntime's
    # fp32 (see test_auto_precision_agrees_within_its_rounding)
    cfg = dict(input_size=SIZE, max_batch=4)
    return {"torch": Embedder(ReidConfig(runtime="torch", precision="fp32", **cfg)),
            "onnxruntime": Embedder(ReidConfig(runtime="onnxruntime", **cfg))}


def test_auto_precision_agrees_within_its_rounding(embedders) -> None:
    """'auto' is bf16 on CPUs with native bf16 (AVX512-BF16/AMX), fp32 elsewhere: the vectors agree with
    fp32 to the precision of the type chosen, on both kinds of CPU."""
    from reidd.reid.model import cpu_supports_bf16

    auto = Embedder(ReidConfig(runtime="torch", input_size=SIZE, max_batch=4))
    assert auto.dtype == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)
    tl = [tracklet("a", 1, 5, 1), tracklet("b", 2, 3, 2)]
    for a, b in zip(auto.embed_tracklets(tl), embedders["torch"].embed_tracklets(tl)):
        if auto.dtype == torch.float32:
            assert np.abs(a.embedding - b.embedding).max() < 1e-5
        else:  # bf16 keeps 8 bits of mantissa: directions agree, components within a few 1e-2
            assert float(a.embedding @ b.embedding) > 0.995


def test_runtimes_agree_and_batching_does_not_change_results(embedders) -> None:
    tl = [tracklet("a", 1, 5, 1), tracklet("b", 2, 3, 2), tracklet("a", 3, 0, 3), tracklet("b", 4, 6, 1)]
    by = {name: e.embed_tracklets(tl) for name, e in embedders.items()}
    for out in by.values():
        assert out[2] is None  # no crops, nothing to embed
        for te, t in zip(out, tl):
            if te is not None:
                assert te.tracklet is t and te.crop_count == len(t.crops)
                assert te.embedding.dtype == np.float32 and abs(np.linalg.norm(te.embedding) - 1) < 1e-5
    for a, b in zip(by["torch"], by["onnxruntime"]):
        if a is not None:
            assert np.abs(a.embedding - b.embedding).max() < 1e-4
    # one tracklet at a time gives the same vectors as all together (batches of 4 crops across tracklets)
    alone = embedders["torch"].embed_tracklets([tl[3]])[0]
    assert np.abs(alone.embedding - by["torch"][3].embedding).max() < 1e-5
    # the same vehicle (seed 1) is closer to itself than to another one
    assert by["torch"][0].embedding @ by["torch"][3].embedding > by["torch"][0].embedding @ by["torch"][1].embedding


def test_checkpoint_and_onnx_weights(tmp_path: Path, embedders) -> None:
    from reidd.reid.checkpoint import save_checkpoint
    from reidd.reid.export import export_model
    from reidd.reid.model import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec(input_size=SIZE, embedding_dim=32), pretrained=True).eval()
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model)
    onnx = tmp_path / "m.onnx"
    export_model(model, onnx, "onnx")
    from_ckpt = Embedder(ReidConfig(input_size=SIZE, embedding_dim=32, weights=str(ckpt), runtime="torch",
                                    precision="fp32"))
    from_onnx = Embedder(ReidConfig(input_size=SIZE, embedding_dim=32, weights=str(onnx)))
    assert from_ckpt.dim == from_onnx.dim == 32
    t = [tracklet("a", 1, 4, 5)]
    a, b = from_ckpt.embed_tracklets(t)[0], from_onnx.embed_tracklets(t)[0]
    assert np.abs(a.embedding - b.embedding).max() < 1e-4
    # weights that contradict an explicit config value are refused, naming the field and both values
    for w in (ckpt, onnx):
        with pytest.raises(EmbedderError, match=r"reid\.weights.*reid\.embedding_dim is 64, the checkpoint has 32"):
            Embedder(ReidConfig(embedding_dim=64, weights=str(w)))
        with pytest.raises(EmbedderError, match=r"reid\.input_size is \(224, 224\), the checkpoint has \(64, 64\)"):
            Embedder(ReidConfig(input_size=(224, 224), weights=str(w)))
        with pytest.raises(EmbedderError, match=r"reid\.backbone is 'resnet18'"):
            Embedder(ReidConfig(backbone="resnet18", weights=str(w)))


def test_checkpoint_alone_describes_the_model(tmp_path: Path) -> None:
    """``reid: {weights: best.pt}`` with nothing else: backbone, embedding size, attention and input size
    come from the checkpoint (a 96x80 CBAM model here, not the 224x224 default)."""
    from reidd.reid.checkpoint import save_checkpoint
    from reidd.reid.export import export_model
    from reidd.reid.model import ModelSpec, build_model

    torch.manual_seed(1)
    model = build_model(ModelSpec(input_size=(96, 80), embedding_dim=24, attention=True), pretrained=False).eval()
    ckpt = save_checkpoint(tmp_path / "best.pt", model)
    onnx = tmp_path / "best.onnx"
    export_model(model, onnx, "onnx")
    t = [tracklet("a", 1, 3, 7)]
    outs = []
    for cfg in (ReidConfig(weights=str(ckpt), runtime="torch", precision="fp32"), ReidConfig(weights=str(onnx)),
                ReidConfig(weights=str(ckpt), input_size=(96, 80), attention=True, embedding_dim=24,
                           runtime="torch", precision="fp32")):
        emb = Embedder(cfg)
        assert emb.spec.input_size == (96, 80) and emb.spec.attention and emb.dim == 24
        outs.append(emb.embed_tracklets(t)[0].embedding)
    assert np.abs(outs[0] - outs[1]).max() < 1e-4 and np.abs(outs[0] - outs[2]).max() < 1e-6
    # without weights the unset fields take their defaults
    plain = Embedder(ReidConfig(runtime="torch", precision="fp32"))
    assert plain.spec.input_size == (224, 224) and plain.spec.backbone == "efficientnet_lite0"
    assert not plain.spec.attention and plain.dim == 1280


def test_batching_embedder_serves_all_cameras(embedders) -> None:
    got: list = []
    done = threading.Event()

    def on_result(embs, batch, failed) -> None:
        assert failed is None
        got.extend(zip(embs, batch))
        if len(got) >= 6:
            done.set()

    be = BatchingEmbedder(embedders["onnxruntime"], on_result).start()
    try:
        be.submit([tracklet("a", i, 3, i) for i in range(3)])
        be.submit([tracklet("b", i, 2, i) for i in range(3)])
        assert done.wait(60) and be.drain(30)
    finally:
        be.close()
    assert sorted((t.camera_id, t.local_id) for _, t in got) == [(c, i) for c in "ab" for i in range(3)]
    assert all(e is not None and e.tracklet is t for e, t in got) and be.errors == be.handoff_errors == 0
