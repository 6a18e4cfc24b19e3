"""Contract test, parametrised over every registered domain-adaptation plugin, with the
real trainer on tiny 2D and 3D classifiers and segmentation networks."""

from __future__ import annotations

import inspect
import json
import math
import warnings

import pytest
import torch

from medxfer.training.checkpoints import BEST_WEIGHTS, load_model_weights
from medxfer.errors import ConfigError
from medxfer.models import set_domain
from medxfer.plugins import PluginLoadWarning, build_registries, create_plugin_manager

from .conftest import batches, make_trainer, tiny_network, tiny_segmentation

BUILT_IN = {"dann", "dsbn", "adabn", "coral", "mmd"}


def _entries():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        return build_registries(create_plugin_manager()).domain_adaptation.entries()


ENTRIES = _entries()


def test_built_in_methods_are_registered():
    assert BUILT_IN <= {e.name for e in ENTRIES}


@pytest.fixture(params=ENTRIES, ids=[e.name for e in ENTRIES])
def entry(request):
    return request.param


def test_plugin_object_contract(entry):
    method = entry.factory()
    description = method.describe()
    assert description["name"] == entry.name
    json.dumps(description)
    assert isinstance(getattr(method, "draws_target_batches", True), bool)
    for attr in dir(method):
        if attr.startswith("medxfer_"):
            params = inspect.signature(getattr(method, attr)).parameters.values()
            assert all(p.default is inspect.Parameter.empty for p in params), attr


def test_unknown_option_value_names_the_key(entry):
    params = inspect.signature(entry.factory).parameters
    name = next(iter(params))
    with pytest.raises(ConfigError, match=rf"domain_adaptation\.{name}"):
        entry.factory(**{name: "not-a-valid-value"})


@pytest.mark.parametrize("segmentation", [False, True], ids=["classifier", "segmentation"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_trains_and_predicts_in_both_domains(entry, spatial_dims, segmentation, tmp_path):
    build = tiny_segmentation if segmentation else tiny_network
    model = build(spatial_dims)
    trainer = make_trainer(tmp_path, model, entry.factory(), spatial_dims=spatial_dims,
                           segmentation=segmentation)
    result = trainer.fit()
    assert len(result.history) == 1
    assert all(math.isfinite(v) for k, v in result.history[0].items() if k.startswith("train_"))
    # The delivered weights fit the delivered model (what evaluation reloads).
    model.load_state_dict(load_model_weights(tmp_path / BEST_WEIGHTS))
    image = batches(spatial_dims, 1, segmentation=segmentation)[0]["image"]
    model.eval()
    with torch.no_grad():
        for domain in ("source", "target"):
            set_domain(model, domain)
            assert torch.isfinite(model(image)).all()
    set_domain(model, "source")
