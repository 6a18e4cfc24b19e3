"""The task head TransferNetwork builds: hidden layers and dropout."""

from __future__ import annotations

import torch
from torch import nn

from medxfer.models import build_network
from medxfer.models.backbone import Backbone


def _backbone(width: int = 10) -> Backbone:
    body = nn.Sequential(nn.Flatten(1), nn.LazyLinear(width))
    body(torch.zeros(1, 1, 4, 4))
    return Backbone(body, [body], width, spatial_dims=2, in_channels=1)


def _linears(net) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in net.head if isinstance(m, nn.Linear)]


def test_no_hidden_layer_is_one_linear_layer():
    assert _linears(build_network(_backbone(), 3)) == [(10, 3)]


def test_one_width_keeps_the_key_names_of_a_list_of_one():
    one = build_network(_backbone(), 3, hidden=7, dropout=0.2)
    listed = build_network(_backbone(), 3, hidden=[7], dropout=0.2)
    assert list(one.head.state_dict()) == list(listed.head.state_dict())
    assert _linears(one) == [(10, 7), (7, 3)]


def test_a_list_of_widths_stacks_linear_relu_layers_before_the_dropout():
    net = build_network(_backbone(), 2, hidden=[120, 84], dropout=0.5)
    kinds = [type(m).__name__ for m in net.head]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Dropout", "Linear"]
    assert _linears(net) == [(10, 120), (120, 84), (84, 2)]
    assert net(torch.zeros(3, 1, 4, 4)).shape == (3, 2)
