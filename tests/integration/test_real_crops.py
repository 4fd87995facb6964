"""The shipped EfficientNet-Lite0/1/2 ImageNet weights classify the shared real vehicle crops (../shared/assets) as
ImageNet vehicle classes."""

from __future__ import annotations

import pytest
import torch

from reidd.reid.backbones import EfficientNetLite0, efficientnet_lite0_weights_path
from reidd.reid.features import read_rgb, resize_uint8

from support import ASSETS


VN = ASSETS / "reid" / "vn-2cam"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.skipif(not VN.is_dir(), reason="shared vn-2cam crops not present")
@pytest.mark.parametrize("variant", [0, 1, 2])
def test_efficientnet_lite_recognises_vehicles_in_real_crops(variant: int) -> None:
    vehicle_classes = {407, 436, 468, 511, 555, 569, 573, 575, 581, 586, 595, 603, 609, 612, 627, 654, 656, 661,
                       665, 670, 671, 675, 705, 717, 734, 751, 757, 779, 803, 817, 829, 864, 867, 874, 880}
    files = sorted((VN / "images" / "train").glob("*_cam1.jpg"))[::60][:8]
    sd = torch.load(efficientnet_lite0_weights_path(variant), map_location="cpu", weights_only=True)
    net = EfficientNetLite0(with_classifier=True, variant=variant)
    net.load_state_dict(sd, strict=True)
    net.eval()
    x = torch.stack([resize_uint8(read_rgb(f), (224, 224)).float() for f in files])
    with torch.no_grad():
        top = net.classify((x - 127.0) / 128.0).argmax(1).tolist()
    hits = sum(t in vehicle_classes for t in top)
    assert hits >= 6, f"only {hits}/{len(files)} crops classified as an ImageNet vehicle class: {top}"
