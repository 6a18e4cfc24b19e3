"""Domain-specific batch norm: statistics and affine parameters stay per domain."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medxfer.config import RunConfig
from medxfer.training.context import FitContext
from medxfer.errors import ConfigError
from medxfer.models import set_domain
from medxfer_plugins.domain_adaptation._norms import DomainBatchNorm, domain_norms
from medxfer_plugins.domain_adaptation.dsbn import dsbn

from .conftest import batches, tiny_network, tiny_segmentation


def _ctx(model: nn.Module) -> FitContext:
    return FitContext(config=RunConfig(), model=model, device=torch.device("cpu"), max_epochs=1)


def _stats(model: nn.Module, domain: str) -> list[torch.Tensor]:
    return [t.clone() for d in domain_norms(model)
            for t in (d.norms[domain].running_mean, d.norms[domain].running_var)]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_each_domain_updates_only_its_own_statistics(spatial_dims):
    model = tiny_network(spatial_dims)
    dsbn().medxfer_fit_start(ctx=_ctx(model))
    assert len(domain_norms(model)) == 2
    source0, target0 = _stats(model, "source"), _stats(model, "target")
    model.train()
    set_domain(model, "target")
    model(batches(spatial_dims, 1, shift=3.0, scale=2.0)[0]["image"])
    assert all(torch.equal(a, b) for a, b in zip(source0, _stats(model, "source")))
    assert not all(torch.equal(a, b) for a, b in zip(target0, _stats(model, "target")))
    target1 = _stats(model, "target")
    set_domain(model, "source")
    model(batches(spatial_dims, 1)[0]["image"])
    assert all(torch.equal(a, b) for a, b in zip(target1, _stats(model, "target")))
    assert not all(torch.equal(a, b) for a, b in zip(source0, _stats(model, "source")))


def test_affine_parameters_are_separate_and_test_time_follows_the_domain():
    model = tiny_network(2)
    dsbn().medxfer_fit_start(ctx=_ctx(model))
    layer = domain_norms(model)[0]
    assert layer.norms["source"].weight is not layer.norms["target"].weight
    with torch.no_grad():
        layer.norms["target"].weight.mul_(3.0)
    model.eval()
    image = batches(2, 1)[0]["image"]
    set_domain(model, "source")
    source_out = model(image)
    set_domain(model, "target")
    assert not torch.allclose(source_out, model(image))


def test_segmentation_encoder_scope_splits_only_the_encoder():
    model = tiny_segmentation(3)
    dsbn(scope="backbone").medxfer_fit_start(ctx=_ctx(model))
    encoder_norm = model.net[0][1]
    decoder_norm = model.net[1][1]
    assert isinstance(encoder_norm, DomainBatchNorm)
    assert isinstance(decoder_norm, nn.BatchNorm3d)
    # the state dict holds the encoder's per-domain layers under the network's own names
    assert "net.0.1.norms.target.running_mean" in model.state_dict()


def test_a_network_without_batch_norm_is_refused():
    model = tiny_network(2)
    for group in model.backbone.body:
        group[1] = nn.Identity()
    with pytest.raises(ConfigError, match="dsbn needs batch-norm layers"):
        dsbn().medxfer_fit_start(ctx=_ctx(model))
