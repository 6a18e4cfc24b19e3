"""DANN: the gradient reverses at the features and only there; lambda ramps up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medxfer.config import RunConfig
from medxfer.training.context import FitContext
from medxfer.errors import ConfigError
from medxfer_plugins.domain_adaptation.dann import dann, ramp, reverse_gradient

from .conftest import make_trainer, tiny_network


def test_reverse_gradient_is_identity_forward_and_negated_backward():
    x = torch.randn(3, 4, requires_grad=True)
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x)
    (y * 2).sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.5))


def test_ramp_rises_from_zero_to_one():
    values = [ramp(p) for p in (0.0, 0.1, 0.5, 1.0)]
    assert values[0] == 0.0 and values == sorted(values) and values[-1] == pytest.approx(1, abs=1e-4)


def _context(total_steps: int, step: int) -> FitContext:
    model = tiny_network(2)
    return FitContext(config=RunConfig(), model=model, device=torch.device("cpu"), max_epochs=1,
                      step=step, total_steps=total_steps)


def test_features_get_the_reversed_gradient_and_the_discriminator_the_plain_one():
    method = dann(hidden=8)
    ctx = _context(total_steps=10, step=5)
    method.medxfer_fit_start(ctx=ctx)
    source = torch.randn(4, 6, requires_grad=True)
    target = (torch.randn(4, 6) + 1).requires_grad_(True)
    [term] = method.medxfer_extra_loss_terms(ctx=ctx, features=source, target_features=target)
    term.value.backward()
    reversed_grads = (source.grad.clone(), target.grad.clone())
    disc_grads = [p.grad.clone() for p in method.discriminator.parameters()]

    # The same loss without the reversal layer: plain gradients everywhere.
    for tensor in (source, target, *method.discriminator.parameters()):
        tensor.grad = None
    logits = method.discriminator(torch.cat([source, target]))
    domains = torch.cat([torch.zeros(4), torch.ones(4)])
    nn.functional.binary_cross_entropy_with_logits(logits[:, 0], domains).backward()
    coeff = method.coefficient(ctx)
    assert 0 < coeff < 1
    assert torch.allclose(reversed_grads[0], -coeff * source.grad, atol=1e-6)
    assert torch.allclose(reversed_grads[1], -coeff * target.grad, atol=1e-6)
    for reversed_grad, p in zip(disc_grads, method.discriminator.parameters()):
        assert torch.allclose(reversed_grad, p.grad, atol=1e-6)


def test_discriminator_trains_with_the_model_and_lambda_is_logged(tmp_path):
    method = dann(hidden=8)
    trainer = make_trainer(tmp_path, tiny_network(2), method, spatial_dims=2, epochs=2)
    result = trainer.fit()
    names = [g.get("name") for g in trainer.ctx.optimizer.param_groups]
    assert "dann_discriminator" in names
    assert 0 < result.history[0]["dann_lambda"] < result.history[1]["dann_lambda"]
    assert "train_dann" in result.history[0]
    # 3 target batches against 2 source batches: the longer loader sets the epoch.
    assert trainer.ctx.step == 6
    assert any(k.startswith("dann.discriminator.") for k in trainer.ctx.state)


def test_no_target_batch_means_no_term():
    method = dann()
    ctx = _context(total_steps=1, step=0)
    method.medxfer_fit_start(ctx=ctx)
    assert method.medxfer_extra_loss_terms(ctx=ctx, features=torch.randn(2, 6),
                                           target_features=None) is None


@pytest.mark.parametrize("option", ["weight", "lambda_max"])
def test_negative_options_are_refused(option):
    with pytest.raises(ConfigError, match=f"domain_adaptation.{option}"):
        dann(**{option: -1.0})
