"""CORAL and MMD: zero for matching features, larger for shifted ones, differentiable."""

from __future__ import annotations

import pytest
import torch

from medxfer.errors import ConfigError
from medxfer_plugins.domain_adaptation.coral import coral, coral_loss
from medxfer_plugins.domain_adaptation.mmd import mmd, mmd_loss


@pytest.mark.parametrize("loss", [coral_loss, mmd_loss])
def test_loss_is_zero_for_the_same_features_and_grows_with_the_shift(loss):
    g = torch.Generator().manual_seed(0)
    source = torch.randn(16, 5, generator=g)
    assert float(loss(source, source)) == pytest.approx(0.0, abs=1e-6)
    near = loss(source, torch.randn(16, 5, generator=g) * 1.2)
    far = loss(source, torch.randn(16, 5, generator=g) * 4 + 2)
    assert 0 < float(near) < float(far)


@pytest.mark.parametrize("name,factory", [("coral", coral), ("mmd", mmd)])
def test_term_is_weighted_and_reaches_both_feature_sets(name, factory):
    method = factory(weight=0.3)
    source = torch.randn(6, 4, requires_grad=True)
    target = (torch.randn(5, 4) * 2).requires_grad_(True)
    [term] = method.medxfer_extra_loss_terms(ctx=None, features=source, target_features=target)
    assert term.name == name and term.weight == 0.3 and term.role == "auxiliary"
    term.value.backward()
    assert source.grad.abs().sum() > 0 and target.grad.abs().sum() > 0
    assert method.medxfer_extra_loss_terms(ctx=None, features=source,
                                           target_features=None) is None


def test_bad_options_name_the_key():
    with pytest.raises(ConfigError, match="domain_adaptation.kernel_mul"):
        mmd(kernel_mul=1.0)
    with pytest.raises(ConfigError, match="domain_adaptation.weight"):
        coral(weight=-0.1)
