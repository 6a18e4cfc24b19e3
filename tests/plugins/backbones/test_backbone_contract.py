"""Contract test run on every registered classifier backbone, so a new one is tested the
moment it exists (segmentation plugins have their own, test_segmentation_contract.py).

Each backbone is built with random weights on tiny 2D inputs (and 3D where it builds 3D
networks) with one and three input channels: the pooled features are ``[N, feature_dim]``,
gradients flow, the layer groups partition the trainable parameters, and freezing group 0
leaves it untouched by an optimizer step while the last group moves.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import medxfer  # noqa: E402
from medxfer.errors import ConfigError  # noqa: E402
from medxfer.models import Backbone, builds_segmentation  # noqa: E402

REGISTRIES = medxfer.build_registries(medxfer.create_plugin_manager())
#: Classifier backbones; segmentation plugins (factories taking ``num_classes``) have their
#: own contract in test_segmentation_contract.py.
ENTRIES = [e for e in REGISTRIES.backbone.entries() if not builds_segmentation(e.factory)]

#: Smallest input side each architecture takes (the default suits an unknown newcomer).
MIN_SIZE_2D = {"alexnet": 63, "inception_v3": 75, "vgg16": 32, "vgg16_bn": 32,
               "densenet121": 29, "googlenet": 15}
MIN_SIZE_3D = {"densenet121_3d": 29}
DEFAULT_2D, DEFAULT_3D, SMALL = 64, 32, 16
KNOWN_SMALL = {"basic_cnn", "lenet", "resnet18", "resnet50", "efficientnet_b0", "timm",
               "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet10_3d",
               "resnet18_3d", "resnet50_3d"}


def input_size(name: str, spatial_dims: int) -> int:
    table = MIN_SIZE_2D if spatial_dims == 2 else MIN_SIZE_3D
    if name in table:
        return table[name]
    if name in KNOWN_SMALL:
        return SMALL
    return DEFAULT_2D if spatial_dims == 2 else DEFAULT_3D


def build(entry, spatial_dims: int, in_channels: int) -> Backbone | None:
    """Build with random weights; ``None`` when the backbone refuses these dimensions."""
    try:
        backbone = entry.factory(in_channels=in_channels, spatial_dims=spatial_dims,
                                 pretrained="none")
    except ConfigError as exc:
        message = str(exc)
        assert entry.name in message and f"{spatial_dims}D" in message, message
        return None
    assert isinstance(backbone, Backbone)
    return backbone


def params_by_group(backbone: Backbone) -> list[list[torch.nn.Parameter]]:
    return [list(group.parameters()) for group in backbone.layer_groups()]


def check_contract(backbone: Backbone, name: str, spatial_dims: int) -> None:
    """Groups partition the parameters; forward, backward and a step with group 0 frozen."""
    assert backbone.spatial_dims == spatial_dims and backbone.in_channels == 1
    assert backbone.load_report is None and backbone.expects_imagenet_norm is False

    groups = params_by_group(backbone)
    assert len(groups) >= 2, "a backbone needs at least two layer groups"
    owner: dict[int, int] = {}
    for index, params in enumerate(groups):
        assert params, f"group {index} has no parameters"
        for p in params:
            assert id(p) not in owner, f"a parameter is in groups {owner.get(id(p))} and {index}"
            owner[id(p)] = index
    trainable = [n for n, p in backbone.body.named_parameters() if p.requires_grad]
    assert set(owner) <= {id(p) for p in backbone.body.parameters()}
    assert len(owner) == len(trainable), "some trainable parameters are in no group"

    size = input_size(name, spatial_dims)
    x = torch.randn(2, 1, *([size] * spatial_dims))
    backbone.train()
    for p in groups[0]:
        p.requires_grad_(False)
    first = [p.detach().clone() for p in groups[0]]
    last = [p.detach().clone() for p in groups[-1]]
    optimizer = torch.optim.SGD([p for p in backbone.parameters() if p.requires_grad], lr=0.1)
    features = backbone(x)
    assert features.shape == (2, backbone.feature_dim)
    assert torch.isfinite(features).all()
    (features.pow(2).mean() + features.mean()).backward()
    assert all(p.grad is None for p in groups[0])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups[-1])
    optimizer.step()
    assert all(torch.equal(a, p) for a, p in zip(first, groups[0]))
    assert any(not torch.equal(b, p) for b, p in zip(last, groups[-1]))


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_backbone_contract(entry) -> None:
    torch.manual_seed(0)
    built = []
    for spatial_dims in (2, 3):
        backbone = build(entry, spatial_dims, in_channels=1)
        if backbone is not None:
            check_contract(backbone, entry.name, spatial_dims)
            built.append(spatial_dims)
    assert built, f"{entry.name} builds neither 2D nor 3D networks"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_backbone_takes_three_channels(entry) -> None:
    for spatial_dims in (2, 3):
        backbone = build(entry, spatial_dims, in_channels=3)
        if backbone is None:
            continue
        assert backbone.in_channels == 3
        backbone.eval()
        size = input_size(entry.name, spatial_dims)
        with torch.no_grad():
            features = backbone(torch.randn(2, 3, *([size] * spatial_dims)))
        assert features.shape == (2, backbone.feature_dim)


def test_two_d_only_backbone_suggests_three_d_ones() -> None:
    with pytest.raises(ConfigError, match="resnet18_3d"):
        REGISTRIES.backbone.get("resnet18").factory(in_channels=1, spatial_dims=3,
                                                    pretrained="none")


def test_too_small_input_is_a_clear_error() -> None:
    backbone = REGISTRIES.backbone.get("inception_v3").factory(
        in_channels=1, spatial_dims=2, pretrained="none")
    with pytest.raises(ConfigError, match="at least 75"):
        backbone(torch.randn(2, 1, 32, 32))


def test_imagenet_is_refused_for_backbones_without_it() -> None:
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        REGISTRIES.backbone.get("resnet10_3d").factory(in_channels=1, spatial_dims=3,
                                                       pretrained="imagenet")


def test_unknown_timm_model_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        REGISTRIES.backbone.get("timm").factory(in_channels=1, spatial_dims=2,
                                                pretrained="none", model="resnet18x")
