"""Contract test run on every registered classifier backbone, so a new one is tested the
moment it exists (segmentation plugins have their own, test_segmentation_contract.py).

Each backbone is built with random weights in every dimensionality its registered
capabilities declare, at the smallest input side they declare, with one and three input
channels: the pooled features are ``[N, feature_dim]``, gradients flow, the layer groups
partition the trainable parameters, and freezing group 0 leaves it untouched by an
optimizer step while the last group moves. A dimensionality it does not declare is refused
with an error naming it, and one pixel less than its declared minimum is refused too.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import medxfer  # noqa: E402
from medxfer import weights  # noqa: E402
from medxfer.errors import ConfigError  # noqa: E402
from medxfer.models import Backbone  # noqa: E402

REGISTRIES = medxfer.build_registries(medxfer.create_plugin_manager())
BACKBONES = REGISTRIES.backbone.entries()
#: Classifier backbones; segmentation plugins have their own contract.
ENTRIES = [e for e in BACKBONES if e.capabilities and e.capabilities.output == "features"]
WITH_IMAGENET = [e for e in BACKBONES if e.capabilities and "imagenet" in e.capabilities.weights]


def input_size(entry) -> int:
    """The smallest side the entry declares (a multiple of its declared multiple)."""
    caps = entry.capabilities
    return -(-caps.min_input_size // caps.input_multiple) * caps.input_multiple


def build(entry, spatial_dims: int, in_channels: int) -> Backbone:
    """Build with random weights."""
    backbone = entry.factory(in_channels=in_channels, spatial_dims=spatial_dims,
                             pretrained="none")
    assert isinstance(backbone, Backbone)
    return backbone


def params_by_group(backbone: Backbone) -> list[list[torch.nn.Parameter]]:
    return [list(group.parameters()) for group in backbone.layer_groups()]


def check_contract(backbone: Backbone, size: int, spatial_dims: int) -> None:
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


def test_every_builtin_backbone_declares_its_capabilities() -> None:
    for entry in BACKBONES:
        if entry.distribution == "medxfer":
            assert entry.capabilities is not None, f"{entry.name} declares no capabilities"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_backbone_contract(entry) -> None:
    torch.manual_seed(0)
    for spatial_dims in entry.capabilities.spatial_dims:
        check_contract(build(entry, spatial_dims, in_channels=1), input_size(entry),
                       spatial_dims)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_backbone_takes_three_channels(entry) -> None:
    for spatial_dims in entry.capabilities.spatial_dims:
        backbone = build(entry, spatial_dims, in_channels=3)
        assert backbone.in_channels == 3
        backbone.eval()
        with torch.no_grad():
            features = backbone(torch.randn(2, 3, *([input_size(entry)] * spatial_dims)))
        assert features.shape == (2, backbone.feature_dim)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_undeclared_dimensions_are_refused_by_name(entry) -> None:
    for spatial_dims in {2, 3} - set(entry.capabilities.spatial_dims):
        with pytest.raises(ConfigError) as info:
            entry.factory(in_channels=1, spatial_dims=spatial_dims, pretrained="none")
        message = str(info.value)
        assert entry.name in message and f"{spatial_dims}D" in message, message


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.capabilities.min_input_size > 1],
                         ids=lambda e: e.name)
def test_one_pixel_below_the_declared_minimum_is_refused(entry) -> None:
    size = entry.capabilities.min_input_size
    for spatial_dims in entry.capabilities.spatial_dims:
        backbone = build(entry, spatial_dims, in_channels=1).eval()
        with pytest.raises(ConfigError, match=f"at least {size} pixels"), torch.no_grad():
            backbone(torch.randn(2, 1, *([size - 1] * spatial_dims)))


def test_registry_names_the_backbones_that_build_the_data_dimensions() -> None:
    with pytest.raises(ConfigError) as info:
        REGISTRIES.backbone.create("resnet18", key="model.backbone", in_channels=1,
                                   spatial_dims=3, pretrained="none")
    message = str(info.value)
    assert message.startswith("model.backbone: backbone 'resnet18' only builds 2D networks")
    suggested = message.split("use one of: ")[1].rstrip(".").split(", ")
    assert suggested == REGISTRIES.backbone.builders_of(3, "features")
    assert "resnet18_3d" in suggested and "resnet18" not in suggested
    assert not set(suggested) & {e.name for e in BACKBONES if e.capabilities.output
                                 == "segmentation"}


class _Looked(Exception):
    """Raised instead of finding a weights file: carries what the factory looked for."""


@pytest.mark.parametrize("entry", WITH_IMAGENET, ids=[e.name for e in WITH_IMAGENET])
def test_declared_imagenet_files_are_the_ones_the_factory_looks_for(entry, monkeypatch) -> None:
    """The offline check reads the declared file names; they must be the factory's own."""
    declared = entry.capabilities.weights["imagenet"]

    def looked(source, **_kwargs):
        raise _Looked(source)

    monkeypatch.setattr(weights, "resolve_weights_file", looked)
    extra = {"num_classes": 2} if entry.capabilities.output == "segmentation" else {}
    with pytest.raises(_Looked) as info:
        entry.factory(in_channels=3, spatial_dims=2, pretrained="imagenet", **extra)
    assert set(declared.file_names) <= set(info.value.args[0].file_names)


def test_timm_declares_the_hub_id_of_its_default_model() -> None:
    import inspect

    import timm

    entry = REGISTRIES.backbone.get("timm")
    default = inspect.signature(entry.factory).parameters["model"].default
    model = timm.create_model(default, pretrained=False)
    assert model.pretrained_cfg["hf_hub_id"] == entry.capabilities.weights["imagenet"].hf_hub_id


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
