"""Batch renormalisation (``model.batch_renorm``): the layer, and the swap into backbones."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import medxfer  # noqa: E402
from medxfer.config import validate_config  # noqa: E402
from medxfer.errors import ConfigError  # noqa: E402
from medxfer.models.adapt import check_layer_groups  # noqa: E402
from medxfer.models.batch_renorm import (  # noqa: E402
    BatchRenorm,
    batch_renorm_from,
    use_batch_renorm,
)
from medxfer.tasks.backbone_build import create_backbone  # noqa: E402

REGISTRIES = medxfer.build_registries(medxfer.create_plugin_manager())


def pretrained_norm(channels: int = 4) -> nn.BatchNorm2d:
    """A batch norm with statistics and affine parameters away from their defaults."""
    torch.manual_seed(0)
    norm = nn.BatchNorm2d(channels)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return norm


def test_with_no_room_to_correct_it_is_batch_norm() -> None:
    norm = pretrained_norm().train()
    renorm = BatchRenorm(4, r_max=1.0, d_max=0.0)
    renorm.load_state_dict(norm.state_dict())
    renorm.train()
    x = torch.randn(8, 4, 5, 5) * 3 + 2
    torch.testing.assert_close(renorm(x), norm(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(renorm.running_mean, norm.running_mean)
    torch.testing.assert_close(renorm.running_var, norm.running_var)
    assert int(renorm.num_batches_tracked) == int(norm.num_batches_tracked) == 1


def test_training_normalises_as_inference_when_the_corrections_fit() -> None:
    """r and d undo the batch statistics, so training sees the running ones."""
    norm = pretrained_norm()
    renorm = batch_renorm_from(norm, r_max=3.0, d_max=5.0).eval()
    x = torch.randn(16, 4, 6, 6) * 1.5 + 0.3  # batch statistics within r_max, d_max
    expected = renorm(x)
    renorm.train()
    torch.testing.assert_close(renorm(x), expected, rtol=1e-4, atol=1e-4)


def test_corrections_are_clipped_and_not_differentiated() -> None:
    renorm = batch_renorm_from(pretrained_norm(), r_max=1.5, d_max=0.5).train()
    x = (torch.randn(16, 4, 6, 6) * 10 + 20).requires_grad_()  # far from the statistics
    out = renorm(x)
    assert torch.isfinite(out).all()
    # clipped: the output is not the running-statistics normalisation any more
    eval_out = batch_renorm_from(pretrained_norm(), r_max=1.5, d_max=0.5).eval()(x.detach())
    assert not torch.allclose(out.detach(), eval_out, atol=1e-2)
    # r, d constant: per channel, the gradient of the sum w.r.t. x sums to zero (as BN's)
    out.sum().backward()
    torch.testing.assert_close(x.grad.sum((0, 2, 3)), torch.zeros(4), atol=1e-3, rtol=0)


def test_evaluation_uses_the_running_statistics_in_any_dimension() -> None:
    norm = nn.BatchNorm3d(3).eval()
    with torch.no_grad():
        norm.running_mean.fill_(0.5)
        norm.running_var.fill_(4.0)
    renorm = batch_renorm_from(norm, r_max=3, d_max=5).eval()
    x = torch.randn(2, 3, 4, 4, 4)
    torch.testing.assert_close(renorm(x), norm(x))


def test_swapping_keeps_parameters_statistics_and_layer_groups() -> None:
    backbone = REGISTRIES.backbone.create("resnet18", in_channels=1, spatial_dims=2,
                                          pretrained="none")
    before = {k: v.clone() for k, v in backbone.body.state_dict().items()}
    params = {n: p for n, p in backbone.body.named_parameters()}
    count = use_batch_renorm(backbone.body, backbone.layer_groups(), r_max=2, d_max=1)
    assert count == sum(1 for m in backbone.body.modules() if isinstance(m, BatchRenorm)) == 20
    assert not any(type(m) is nn.BatchNorm2d for m in backbone.body.modules())
    after = backbone.body.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(p is params[n] for n, p in backbone.body.named_parameters())
    check_layer_groups("resnet18", backbone.body, backbone.layer_groups())
    assert any(isinstance(m, BatchRenorm) for m in backbone.layer_groups()[0].modules())


def config(**model) -> object:
    return validate_config({"model": {"backbone": {"name": "resnet18", "pretrained": "none"},
                                      **model}})


@pytest.mark.parametrize("option,r_max", [(True, 3.0), ({"r_max": 2.0, "d_max": 1.0}, 2.0)])
def test_model_batch_renorm_swaps_the_backbones_batch_norms(option, r_max) -> None:
    cfg = config(batch_renorm=option)
    entry = REGISTRIES.backbone.get("resnet18")
    backbone = create_backbone(cfg, REGISTRIES, entry, {"in_channels": 1, "spatial_dims": 2,
                                                         "pretrained": "none"})
    renorms = [m for m in backbone.body.modules() if isinstance(m, BatchRenorm)]
    assert renorms and all(m.r_max == r_max for m in renorms)


def test_batch_renorm_without_batch_norms_is_refused() -> None:
    cfg = validate_config({"model": {"backbone": {"name": "lenet"}, "batch_renorm": True}})
    with pytest.raises(ConfigError, match="model.batch_renorm: backbone 'lenet' has no batch"):
        create_backbone(cfg, REGISTRIES, REGISTRIES.backbone.get("lenet"),
                        {"in_channels": 1, "spatial_dims": 2})


def test_batch_renorm_with_synchronised_batch_norms_is_refused() -> None:
    cfg = validate_config({"model": {"backbone": {"name": "resnet18", "pretrained": "none"},
                                     "batch_renorm": True}, "train": {"sync_batchnorm": True}})
    with pytest.raises(ConfigError, match="sync_batchnorm"):
        create_backbone(cfg, REGISTRIES, REGISTRIES.backbone.get("resnet18"),
                        {"in_channels": 1, "spatial_dims": 2, "pretrained": "none"})


def test_batch_renorm_bounds_are_checked_by_the_config() -> None:
    with pytest.raises(ConfigError, match="r_max"):
        config(batch_renorm={"r_max": 0.5})
