"""EnsembleNetwork: the members' outputs averaged, as task outputs."""

from __future__ import annotations

import pytest
import torch

from medxfer.models import EnsembleNetwork, build_network
from medxfer.plugins import build_registries


def _net(out: int, seed: int):
    torch.manual_seed(seed)
    backbone = build_registries().backbone.create("basic_cnn", in_channels=1, spatial_dims=2,
                                                  pretrained="none")
    return build_network(backbone, out).eval()


def test_classification_returns_log_mean_probabilities():
    members = [_net(3, s) for s in range(3)]
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        want = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        got = EnsembleNetwork(members).eval()(x)
    assert torch.allclose(got.softmax(1), want, atol=1e-6)
    assert got.shape == (4, 3)


def test_regression_returns_the_mean_output():
    members = [_net(1, s) for s in range(2)]
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        want = (members[0](x) + members[1](x)) / 2
        got = EnsembleNetwork(members).eval()(x)
    assert torch.allclose(got, want, atol=1e-6)


def test_each_member_keeps_its_test_time_augmentation():
    members = [_net(2, s) for s in range(2)]
    members[0].tta_axes = [1]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        want = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        got = EnsembleNetwork(members).eval()(x).softmax(1)
    assert torch.allclose(got, want, atol=1e-6)


def test_refuses_no_members_and_members_of_different_widths():
    with pytest.raises(ValueError, match="at least one"):
        EnsembleNetwork([])
    with pytest.raises(ValueError, match="out_features"):
        EnsembleNetwork([_net(2, 0), _net(3, 1)])
