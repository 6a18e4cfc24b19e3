"""Contract test, parametrised over every registered strategy, on tiny 2D and 3D nets."""

from __future__ import annotations

import inspect
import json
import warnings

import pytest
import torch
from torch import nn

from medxfer.training.freezing import is_norm_with_stats
from medxfer.plugins import PluginLoadWarning, build_registries, create_plugin_manager

BUILT_IN = {"feature_extraction", "full_finetune", "partial_finetune", "gradual_unfreeze",
            "discriminative_lr", "l2sp", "lwf", "scratch"}
HOOK_PREFIX = "medxfer_"


def _strategy_entries():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # other kinds may be unfinished
        return build_registries(create_plugin_manager()).strategy.entries()


ENTRIES = _strategy_entries()


def test_built_in_strategies_are_registered():
    assert BUILT_IN <= {e.name for e in ENTRIES}


@pytest.fixture(params=ENTRIES, ids=[e.name for e in ENTRIES])
def entry(request):
    return request.param


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _frozen_norm_layers(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if is_norm_with_stats(m) and not any(p.requires_grad for p in m.parameters())]


def test_strategy_object_contract(entry):
    strategy = entry.factory()
    assert isinstance(getattr(strategy, "uses_pretrained", True), bool)
    assert isinstance(getattr(strategy, "keeps_pretrained", False), bool)
    description = strategy.describe()
    assert description["name"] == entry.name
    json.dumps(description)  # goes into metrics.json as is
    for attr in dir(strategy):
        if attr.startswith(HOOK_PREFIX):
            method = getattr(strategy, attr)
            params = inspect.signature(method).parameters.values()
            assert all(p.default is inspect.Parameter.empty for p in params), attr


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_strategy_trains_and_respects_its_freezing(entry, spatial_dims, make_network, make_loop):
    model = make_network(spatial_dims)
    before = _snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scratch warns about the fake weights
        loop = make_loop(model, entry.factory(), spatial_dims)
        ctx = loop.fit(epochs=3)
    after = model.state_dict()
    named = dict(model.named_parameters())
    frozen = [n for n, p in named.items() if not p.requires_grad]
    trainable = [n for n, p in named.items() if p.requires_grad]
    assert trainable, "a strategy must train something"
    assert all(named[n].grad is None or not named[n].grad.abs().sum() for n in frozen)
    for name in frozen:
        assert torch.equal(before[name], after[name]), f"frozen {name} changed"
    for name in trainable:
        assert not torch.equal(before[name], after[name]), f"trainable {name} did not change"
    in_optimizer = {id(p) for g in ctx.optimizer.param_groups for p in g["params"]}
    assert {id(named[n]) for n in trainable} <= in_optimizer
    for layer in _frozen_norm_layers(model):
        for buffer in ("running_mean", "running_var"):
            key = f"{layer}.{buffer}"
            assert torch.equal(before[key], after[key]), f"{key} of a frozen layer changed"
    assert all(torch.isfinite(torch.tensor(list(t.values()))).all() for t in loop.terms)
