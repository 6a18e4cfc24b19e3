"""Freezing helpers: parameters, normalisation statistics, parameter groups."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from medxfer.training.freezing import (
    freeze,
    frozen_norm_layers,
    is_frozen,
    keep_frozen_norms_in_eval,
    parameter_group,
    trainable_parameters,
    unfreeze,
    ungrouped_trainable_parameters,
)


def _net(spatial_dims: int = 2) -> nn.Sequential:
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(conv(1, 3, 3), norm(3), nn.ReLU()),
                         nn.Sequential(conv(3, 4, 3), norm(4), nn.ReLU()))


def _images(spatial_dims: int = 2) -> torch.Tensor:
    return torch.randn((2, 1) + (7,) * spatial_dims) * 3 + 2


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_freeze_locks_parameters_and_statistics_despite_train(spatial_dims):
    net = _net(spatial_dims)
    net[0][0].weight.grad = torch.ones_like(net[0][0].weight)
    freeze(net[0])
    assert is_frozen(net[0]) and not is_frozen(net[1])
    assert net[0][0].weight.grad is None
    assert trainable_parameters(net) == list(net[1].parameters())
    stats = net[0][1].running_mean.clone()
    net.train()  # as the trainer does every epoch
    assert net[0][1].training  # train() reaches the layer ...
    net(_images(spatial_dims))  # ... but the forward pre-hook puts it back into eval mode
    assert not net[0][1].training
    assert torch.equal(net[0][1].running_mean, stats)
    assert not torch.equal(net[1][1].running_mean, torch.zeros(4))  # unfrozen BN updates
    net.train()
    assert keep_frozen_norms_in_eval(net) == 1 and not net[0][1].training and net[1][1].training


def test_train_bn_keeps_statistics_updating():
    net = _net()
    freeze(net, train_bn=True)
    assert frozen_norm_layers(net) == [] and trainable_parameters(net) == []
    stats = net[0][1].running_mean.clone()
    net.train()
    net(_images())
    assert not torch.equal(net[0][1].running_mean, stats)


def test_unfreeze_undoes_freeze():
    net = _net()
    freeze(net)
    freeze(net)  # twice is harmless
    assert len(frozen_norm_layers(net)) == 2
    net.train()
    unfreeze(net[1])
    assert frozen_norm_layers(net) == [net[0][1]]
    assert net[1][1].training and all(p.requires_grad for p in net[1].parameters())
    assert not net[1][1]._forward_pre_hooks
    stats = net[1][1].running_mean.clone()
    net(_images())
    assert not torch.equal(net[1][1].running_mean, stats)


def test_frozen_modules_deepcopy_and_pickle():
    net = _net()
    freeze(net[0])
    clone = copy.deepcopy(net)
    assert len(frozen_norm_layers(clone)) == 1
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    loaded.train()
    loaded(_images())
    assert not loaded[0][1].training
    assert set(net.state_dict()) == set(_net().state_dict())  # nothing added to the state


def test_instance_norm_with_running_stats_is_locked():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.InstanceNorm2d(2, track_running_stats=True))
    freeze(net)
    net.train()
    net(_images())
    assert torch.equal(net[1].running_mean, torch.zeros(2))


def test_parameter_groups_helpers():
    net = _net()
    extra = nn.Linear(2, 2)
    net.add_module("extra", extra)
    freeze(net[0])
    assert parameter_group(net[0], lr=0.1, name="g0") is None
    group = parameter_group([net[1], net[1]], lr=0.1, name="g1")
    assert group["name"] == "g1" and group["lr"] == 0.1
    assert len(group["params"]) == len(list(net[1].parameters()))  # each parameter once
    assert ungrouped_trainable_parameters(net, [group]) == list(extra.parameters())
    without = parameter_group(net, lr=1.0, name="rest", exclude=group["params"])
    assert without["params"] == list(extra.parameters())
