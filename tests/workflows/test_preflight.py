"""Preflight: the warning for a strategy that freezes or pulls towards random starting
weights (``medxfer run`` prints it; ``medxfer compare`` refuses such cells), and the refusal
of DDP's static graph with a strategy that changes which parameters train."""

from __future__ import annotations

import re

import pytest

from medxfer.config import load_config
from medxfer.errors import ConfigError
from medxfer.workflows.preflight import check_config, random_start_warning, starts_from_random
from medxfer.plugins import build_registries

RANDOM = ["model.backbone.name=basic_cnn", "model.backbone.pretrained=none"]


@pytest.fixture(scope="module")
def registries():
    return build_registries()


def _warning(registries, *overrides: str) -> str | None:
    config = load_config(None, list(overrides))
    return random_start_warning(config, registries, check_config(config, registries,
                                                                 machine=False))


@pytest.mark.parametrize("strategy", ["feature_extraction", "partial_finetune",
                                      "gradual_unfreeze", "l2sp", "lwf"])
def test_a_strategy_that_keeps_random_starting_weights_is_warned_of(registries, strategy):
    message = _warning(registries, *RANDOM, f"strategy.name={strategy}")
    assert message is not None
    for text in (f"strategy {strategy!r}", "backbone 'basic_cnn' starts from random weights",
                 "Set model.backbone.pretrained to imagenet or a transfer source folder",
                 "use strategy full_finetune or scratch"):
        assert text in message, text


def test_the_backbones_own_default_of_no_weights_is_warned_of_too(registries):
    """basic_cnn's factory defaults to ``pretrained="none"``: no key is no weights."""
    assert _warning(registries, "model.backbone={name: basic_cnn}",
                    "strategy.name=feature_extraction") is not None


@pytest.mark.parametrize("strategy", [["strategy.name=full_finetune"], ["strategy.name=scratch"],
                                      ["strategy.name=discriminative_lr"],
                                      ["strategy.name=partial_finetune",
                                       "strategy.freeze_groups=0"]])
def test_strategies_that_train_every_starting_weight_are_not_warned_of(registries, strategy):
    assert _warning(registries, *RANDOM, *strategy) is None


@pytest.mark.parametrize("backbone", [["model.backbone.name=mobilenet_v2",
                                       "model.backbone.pretrained=imagenet"],
                                      ["model.backbone.name=basic_cnn",
                                       "model.backbone.pretrained=runs/source"]])
def test_pretrained_weights_are_not_warned_of(registries, backbone):
    assert _warning(registries, *backbone, "strategy.name=feature_extraction") is None


def test_starts_from_random_is_false_for_scratch_and_true_for_full_finetune(registries):
    """The question ``medxfer compare`` asks of every cell, and the warning asks too."""
    for strategy, expected in (("scratch", False), ("full_finetune", True)):
        config = load_config(None, [*RANDOM, f"strategy.name={strategy}"])
        strategy_object = check_config(config, registries, machine=False)
        assert starts_from_random(config, registries, strategy_object) is expected


# --- sliding-window size --------------------------------------------------------------------

SEG = ["task=segmentation", "model.backbone.name=monai_unet", "model.backbone.pretrained=none",
       "data.patch.size=[32,32,32]"]


def test_a_sliding_window_the_network_cannot_take_is_found_before_training(registries):
    """The training patch fits; the validation windows (16^3, the U-Net needs a side of 32)
    would have failed only after the first epoch."""
    from medxfer.workflows.preflight import check_network
    from medxfer.errors import InputSizeError

    config = load_config(None, [*SEG, "eval.sliding_window.roi_size=[16,16,16]"])
    with pytest.raises(InputSizeError, match=r"got 16x16x16: eval.sliding_window.roi_size "
                                             r"\[16, 16, 16\] sets the windows of validation"):
        check_network(config, registries)
    check_network(load_config(None, [*SEG, "eval.sliding_window.roi_size=[32,32,32]"]),
                  registries)


def test_inference_names_the_window_setting_the_network_refuses():
    import torch

    from medxfer.training.amp import Precision
    from medxfer.tasks.segmentation.inference import predict_probabilities
    from medxfer.errors import InputSizeError

    class Refuses(torch.nn.Module):
        spatial_dims, size_divisor = 3, 1

        def forward(self, x):
            raise InputSizeError("takes sides of at least 32; got 16x16x16",
                                 "change data.patch.size")

    images = torch.zeros(1, 1, 20, 20, 20)
    for window, hint in (("eval.sliding_window.roi_size=[16,16,16]",
                          "eval.sliding_window.roi_size [16, 16, 16] sets the windows"),
                         ("data.patch.size=[16,16,16]", "change data.patch.size")):
        config = load_config(None, ["task=segmentation", window])
        with pytest.raises(InputSizeError, match=re.escape(f"got 16x16x16: {hint}")):
            predict_probabilities(Refuses(), images, config, device=torch.device("cpu"),
                                  precision=Precision(None, "cpu"))


def test_a_static_ddp_graph_is_refused_with_a_strategy_that_unfreezes(registries):
    config = load_config(None, ["strategy.name=gradual_unfreeze",
                                "train.ddp.static_graph=true"])
    with pytest.raises(ConfigError, match=re.escape(
            "train.ddp.static_graph: strategy 'gradual_unfreeze' changes which parameters "
            "train during the run")):
        check_config(config, registries, machine=False)
    for allowed in (["strategy.name=gradual_unfreeze"],  # no static graph
                    ["strategy.name=partial_finetune", "train.ddp.static_graph=true"]):
        check_config(load_config(None, allowed), registries, machine=False)
