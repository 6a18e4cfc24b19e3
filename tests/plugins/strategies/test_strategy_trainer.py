"""Every built-in strategy through the real trainer (tiny 2D net, CPU), resume included."""

from __future__ import annotations

import warnings

import medxfer
import pytest
import torch
from torch import nn

from medxfer.config import RunConfig
from medxfer.training.amp import Precision
from medxfer.training.trainer import Trainer
from medxfer.plugins import PluginLoadWarning, build_registries, create_plugin_manager

BUILT_IN = ["feature_extraction", "full_finetune", "partial_finetune", "gradual_unfreeze",
            "discriminative_lr", "l2sp", "lwf", "scratch"]


@pytest.fixture
def make_trainer(make_network, make_batches):
    def make(tmp_path, strategy, *, epochs, extra=None, seed=0):
        config = RunConfig.model_validate({"train": {"epochs": epochs, "optimizer": {"lr": 0.01}},
                                           "loss": {"alpha": 0.5}})
        hooks = create_plugin_manager(load_entry_points=False)
        hooks.register(strategy, name="strategy")
        if extra is not None:
            hooks.register(extra, name="extra")
        data = make_batches(2, count=3)
        loss_fn = nn.CrossEntropyLoss()

        def validate(net):
            with torch.no_grad():
                return {"val_loss": float(sum(loss_fn(net(b["image"]), b["label"]) for b in data))}

        return Trainer(config, make_network(2, seed=seed), hooks, torch.device("cpu"),
                       Precision(None, "cpu"), tmp_path, data, validate, loss_fn,
                       ("val_loss", "min"), progress=False)

    return make


@pytest.fixture(scope="module")
def strategies():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        return build_registries(create_plugin_manager()).strategy


@pytest.mark.parametrize("name", BUILT_IN)
def test_strategy_runs_in_the_trainer(tmp_path, strategies, make_trainer, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = make_trainer(tmp_path, strategies.create(name), epochs=2).fit()
    assert len(result.history) == 2
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in result.history)
    if name in ("l2sp", "lwf"):
        assert f"train_{name}" in result.history[0] and "train_L_pre" in result.history[0]


def test_gradual_unfreeze_resume_in_the_trainer(tmp_path, strategies, make_trainer):
    def make():
        return strategies.create("gradual_unfreeze", every=1)

    full = make_trainer(tmp_path / "full", make(), epochs=4).fit()

    class Killer:
        @medxfer.hookimpl
        def medxfer_epoch_start(self, epoch):
            if epoch == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "part", make(), epochs=4, extra=Killer()).fit()
    resumed = make_trainer(tmp_path / "part", make(), epochs=4, seed=5).fit(resume=True)
    assert [h["unfrozen_groups"] for h in resumed.history] == [0, 1, 2, 3]
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
