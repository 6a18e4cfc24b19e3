"""Strategy options: defaults, validation errors naming ``strategy.<option>``."""

from __future__ import annotations

import warnings

import pytest
from torch import nn

from medxfer.errors import ConfigError
from medxfer.plugins import PluginLoadWarning, build_registries, create_plugin_manager


@pytest.fixture(scope="module")
def strategies():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        return build_registries(create_plugin_manager()).strategy


@pytest.mark.parametrize("name, options, key", [
    ("full_finetune", {"backbone_lr_mult": 0}, "strategy.backbone_lr_mult"),
    ("full_finetune", {"backbone_lr_mult": "fast"}, "strategy.backbone_lr_mult"),
    ("partial_finetune", {"freeze_groups": -1}, "strategy.freeze_groups"),
    ("partial_finetune", {"freeze_groups": 1.5}, "strategy.freeze_groups"),
    ("partial_finetune", {"freeze_groups": True}, "strategy.freeze_groups"),
    ("partial_finetune", {"train_bn": "yes"}, "strategy.train_bn"),
    ("gradual_unfreeze", {"every": 0}, "strategy.every"),
    ("gradual_unfreeze", {"decay": 1.5}, "strategy.decay"),
    ("discriminative_lr", {"decay": 0.0}, "strategy.decay"),
    ("discriminative_lr", {"multipliers": [1.0, -1.0]}, "strategy.multipliers[1]"),
    ("discriminative_lr", {"multipliers": "0.1"}, "strategy.multipliers"),
    ("discriminative_lr", {"multipliers": []}, "strategy.multipliers"),
    ("discriminative_lr", {"decay": 0.5, "multipliers": [1.0]}, "strategy.multipliers"),
    ("l2sp", {"head_decay": -0.1}, "strategy.head_decay"),
    ("l2sp", {"keep_weight_decay": 1}, "strategy.keep_weight_decay"),
    ("lwf", {"temperature": 0}, "strategy.temperature"),
    ("lwf", {"source_head": "imagenet"}, "strategy.source_head"),
    ("feature_extraction", {"freeze_groups": 1}, "strategy.freeze_groups"),
    ("scratch", {"lr": 1}, "strategy.lr"),
])
def test_bad_option_names_the_key(strategies, name, options, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        strategies.create(name, key="strategy", **options)


@pytest.mark.parametrize("name, expected", [
    ("feature_extraction", {}),
    ("full_finetune", {"backbone_lr_mult": 1.0}),
    ("partial_finetune", {"freeze_groups": 2, "train_bn": False}),
    ("gradual_unfreeze", {"every": 1, "decay": 1.0, "train_bn": False}),
    ("discriminative_lr", {"decay": 0.5, "multipliers": None}),
    ("l2sp", {"head_decay": 0.0, "keep_weight_decay": False}),
    ("lwf", {"temperature": 2.0, "distils": "features"}),
    ("scratch", {}),
])
def test_defaults_are_described(strategies, name, expected):
    strategy = strategies.create(name, key="strategy")
    assert strategy.describe() == {"name": name, **expected}
    assert strategy.uses_pretrained is (name != "scratch")
    assert strategy.keeps_pretrained is (name not in ("full_finetune", "discriminative_lr",
                                                      "scratch"))
    assert strategy.changes_trainable_parameters is (name == "gradual_unfreeze")


def test_lwf_accepts_a_source_head_from_python(strategies):
    strategy = strategies.create("lwf", key="strategy", source_head=nn.Linear(8, 5))
    assert strategy.describe()["distils"] == "source_logits"
