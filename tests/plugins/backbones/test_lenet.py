"""LeNet-5's ``features`` option: where the backbone ends, and what feature extraction
freezes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("medxfer_plugins")

from medxfer.errors import ConfigError, WeightsError  # noqa: E402
from medxfer_plugins.backbones.lenet import lenet  # noqa: E402


@pytest.mark.parametrize("spatial_dims, size, width", [(2, 28, 400), (3, 16, 2000)])
def test_conv_features_end_at_the_pooled_convolutions(spatial_dims, size, width):
    backbone = lenet(in_channels=1, spatial_dims=spatial_dims, features="conv")
    assert backbone.feature_dim == width
    assert [name for name, _ in backbone.body.named_children()] == ["conv1", "conv2"]
    assert len(backbone.layer_groups()) == 2
    out = backbone(torch.zeros(2, 1, *[size] * spatial_dims))
    assert out.shape == (2, width)
    assert not any(isinstance(m, torch.nn.Linear) for m in backbone.modules())


def test_fc_features_are_the_default_and_keep_the_fully_connected_layers():
    backbone = lenet(in_channels=1, spatial_dims=2)
    assert backbone.feature_dim == 84
    assert [name for name, _ in backbone.body.named_children()] == ["conv1", "conv2", "fc"]
    assert backbone(torch.zeros(1, 1, 28, 28)).shape == (1, 84)


def test_conv_features_load_the_convolutions_of_an_fc_source(tmp_path):
    source = lenet(in_channels=1, spatial_dims=2)
    path = tmp_path / "lenet_fc.pt"
    torch.save(source.body.state_dict(), path)
    backbone = lenet(in_channels=1, spatial_dims=2, pretrained=str(path), features="conv")
    report = backbone.load_report
    assert report.loaded == report.expected == 4  # two convolutions, weight and bias
    assert all(key.startswith("fc.") for key in report.skipped) and len(report.skipped) == 4
    assert torch.equal(backbone.body.conv2[0].weight, source.body.conv2[0].weight)
    # the other way round the fully connected layers are missing: a clear refusal
    conv_path = tmp_path / "lenet_conv.pt"
    torch.save(backbone.body.state_dict(), conv_path)
    with pytest.raises(WeightsError, match="missing e.g. fc"):
        lenet(in_channels=1, spatial_dims=2, pretrained=str(conv_path))


def test_feature_extraction_with_conv_features_trains_a_new_head_only():
    import medxfer
    from medxfer.models import build_network

    registries = medxfer.build_registries(medxfer.create_plugin_manager())
    backbone = lenet(in_channels=1, spatial_dims=2, features="conv")
    net = build_network(backbone, 2, hidden=[120, 84])
    strategy = registries.strategy.create("feature_extraction", key="strategy")
    strategy.medxfer_fit_start(ctx=SimpleNamespace(model=net))
    assert not any(p.requires_grad for p in backbone.parameters())
    trainable = [m for m in net.head.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in trainable] == [120, 84, 2]
    assert all(p.requires_grad for p in net.head.parameters())


def test_unknown_features_value_names_the_key():
    with pytest.raises(ConfigError, match=r"model.backbone.features: 'dense' is not one of fc"):
        lenet(features="dense")
