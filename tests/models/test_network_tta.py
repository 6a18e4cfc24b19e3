"""Test-time flip averaging in TransferNetwork.forward (``eval.tta: flip``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medxfer.models import build_network
from medxfer.models.backbone import Backbone
from medxfer.models.network import flip_variants


class _Ramp(nn.Module):
    """Features that change under flips: the image weighted by a ramp along axis 0, and
    its mean."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-1, 1, x.shape[2], device=x.device)
        ramp = ramp.view(1, 1, -1, *([1] * (x.ndim - 3)))
        return torch.stack([(x * ramp).flatten(1).mean(1), x.flatten(1).mean(1)], 1) * self.scale


def _net(out: int = 3, dims: int = 2):
    torch.manual_seed(0)
    body = _Ramp()
    return build_network(Backbone(body, [body], 2, spatial_dims=dims, in_channels=1), out)


def test_flip_variants_cover_every_combination():
    x = torch.arange(2 * 1 * 2 * 3 * 4, dtype=torch.float32).view(2, 1, 2, 3, 4)
    variants = flip_variants(x, [0, 2])
    assert len(variants) == 4 and torch.equal(variants[0], x)
    expected = [x, x.flip(2), x.flip(4), x.flip(2).flip(4)]
    assert all(torch.equal(v, e) for v, e in zip(variants, expected))


def test_classification_averages_probabilities_in_eval_mode_only():
    net = _net().eval()
    x = torch.randn(5, 1, 6, 6)
    plain = net(x)
    net.tta_axes = [0]
    averaged = net(x)
    expected = (net.forward_features(x)[0].softmax(1)
                + net.forward_features(x.flip(2))[0].softmax(1)) / 2
    assert torch.allclose(averaged.softmax(1), expected, atol=1e-6)
    assert not torch.allclose(averaged.softmax(1), plain.softmax(1))
    net.train()
    assert torch.allclose(net(x), net.forward_features(x)[0])  # training is unaffected


def test_regression_averages_values():
    net = _net(out=1).eval()
    net.tta_axes = [0]
    x = torch.randn(4, 1, 5, 5)
    expected = (net.forward_features(x)[0] + net.forward_features(x.flip(2))[0]) / 2
    assert torch.allclose(net(x), expected, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_torchscript_trace_keeps_the_averaging(dims):
    net = _net(dims=dims).eval()
    net.tta_axes = [0]
    x = torch.randn(2, 1, *([6] * dims))
    traced = torch.jit.trace(net, x, check_trace=False)
    y = torch.randn(3, 1, *([6] * dims))
    assert torch.allclose(traced(y), net(y), atol=1e-6)
