"""AdaBN: after training, only batch-norm buffers change (target statistics)."""

from __future__ import annotations

import pytest
import torch

from medxfer.config import RunConfig
from medxfer.training.context import FitContext
from medxfer.models import set_domain
from medxfer_plugins.domain_adaptation._norms import domain_norms
from medxfer_plugins.domain_adaptation.adabn import adabn

from .conftest import batches, make_trainer, tiny_network, tiny_segmentation


@pytest.mark.parametrize("build", [tiny_network, tiny_segmentation], ids=["classifier", "seg"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_only_batch_norm_buffers_change(build, spatial_dims):
    model = build(spatial_dims)
    model.train()
    model(batches(spatial_dims, 1)[0]["image"])  # source statistics away from the defaults
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params_before = {k: v.detach().clone() for k, v in model.named_parameters()}
    target = batches(spatial_dims, 2, shift=2.0, scale=3.0, seed=7)
    ctx = FitContext(config=RunConfig(), model=model, device=torch.device("cpu"), max_epochs=1,
                     target_loader=target)
    adabn().medxfer_fit_end(ctx=ctx)
    after = model.state_dict()
    for name, value in model.named_parameters():
        assert torch.equal(value, params_before[name.replace(".norms.source", "")]), name
    changed = set()
    for key, value in after.items():
        original = key.replace(".norms.source", "").replace(".norms.target", "")
        if not torch.equal(value, before[original]):
            changed.add(key)
    assert changed and all(".norms.target.running_" in k or
                           ".norms.target.num_batches" in k for k in changed)
    for layer in domain_norms(model):  # affine parameters are shared, not copied
        assert layer.norms["target"].weight is layer.norms["source"].weight


def test_target_statistics_are_the_target_data_statistics():
    model = tiny_network(2)
    target = batches(2, 3, shift=2.0, scale=3.0, seed=7)
    ctx = FitContext(config=RunConfig(), model=model, device=torch.device("cpu"), max_epochs=1,
                     target_loader=target)
    adabn().medxfer_fit_end(ctx=ctx)
    first = domain_norms(model)[0]
    conv = model.backbone.body[0][0]
    with torch.no_grad():
        activations = torch.cat([conv(b["image"]) for b in target])
    expected = activations.transpose(0, 1).flatten(1).mean(dim=1)
    assert torch.allclose(first.norms["target"].running_mean, expected, atol=1e-5)
    assert not torch.allclose(first.norms["source"].running_mean, expected, atol=1e-2)
    set_domain(model, "source")


def test_adabn_draws_no_target_batches_during_training(tmp_path):
    method = adabn()
    trainer = make_trainer(tmp_path, tiny_network(2), method, spatial_dims=2)
    trainer.fit()
    assert trainer.ctx.step == 2  # the source loader alone sets the epoch
    assert trainer.ctx.state["adabn.target_batches"] == 3
