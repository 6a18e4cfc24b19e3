"""``model.backbone.to_3d`` for segmentation plugins: every registered segmentation network
that builds 2D networks only is converted whole (``acs``, ``i3d``) and gives logits of the
volume's size with its encoder view and layer groups intact, or is refused by name when
its ``forward`` works on 2D feature maps only; ``2.5d`` is for classifier backbones."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import copy  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import medxfer  # noqa: E402
from medxfer.errors import ConfigError  # noqa: E402
from medxfer.models import build_segmentation_network  # noqa: E402
from medxfer.models.to_3d import segmentation_to_3d  # noqa: E402

REGISTRIES = medxfer.build_registries(medxfer.create_plugin_manager())
#: Segmentation plugins that build 2D networks only (the others build 3D ones themselves).
ENTRIES = [e for e in REGISTRIES.backbone.entries() if e.capabilities
           and e.capabilities.output == "segmentation" and e.capabilities.spatial_dims == (2,)]
#: smp's U-Net decoder unpacks ``height, width`` of every feature map.
REFUSED = {"unet"}
#: Tens of seconds each (dilated or nested decoders at their smallest cube).
HEAVY = {"deeplabv3plus", "unetplusplus"}
CASES = [pytest.param(e, m, id=f"{e.name}-{m}",
                      marks=[pytest.mark.slow] if e.name in HEAVY else [])
         for e in ENTRIES for m in ("acs", "i3d")]


def side(entry) -> int:
    caps = entry.capabilities
    return -(-max(caps.min_input_size, 16) // caps.input_multiple) * caps.input_multiple


def build(entry):
    return entry.factory(in_channels=1, spatial_dims=2, num_classes=3, pretrained="none")


@pytest.mark.parametrize("entry,method", CASES)
def test_segmentation_networks_convert_or_are_refused_by_name(entry, method) -> None:
    torch.manual_seed(0)
    model = build(entry)
    n = side(entry)
    if entry.name in REFUSED:
        with pytest.raises(ConfigError) as info:
            segmentation_to_3d(model, method, name=entry.name, check_size=n)
        assert entry.name in str(info.value) and "native 3D" in str(info.value)
        return
    converted = segmentation_to_3d(model, method, name=entry.name, check_size=n)
    assert converted.spatial_dims == 3
    in_net = {id(p) for p in converted.net.parameters()}  # groups hold the new layers
    assert all(id(p) in in_net for g in converted.encoder_groups for p in g.parameters())
    assert not any(type(m).__name__.endswith("2d") and "Conv" in type(m).__name__
                   for g in converted.encoder_groups for m in g.modules())
    network = build_segmentation_network(converted).train()
    twin = copy.deepcopy(network)  # a frozen copy (LwF) runs in 3D too
    x = torch.randn(2, 1, n, n, n)
    logits, features = network.forward_features(x)
    assert logits.shape == (2, 3, n, n, n) and features.shape == (2, converted.feature_dim)
    torch.testing.assert_close(network.backbone(x), features)  # the encoder alone, too
    logits.mean().backward()
    assert all(p.grad is not None for p in converted.encoder_groups[0].parameters())
    with torch.no_grad():
        assert twin(x).shape == logits.shape


def test_segmentation_refuses_2_5d() -> None:
    entry = REGISTRIES.backbone.get("fpn")
    with pytest.raises(ConfigError, match="classifier backbones"):
        segmentation_to_3d(build(entry), "2.5d", name="fpn", check_size=32)
