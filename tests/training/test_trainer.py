"""The trainer: hook order, combined loss, checkpoints, resume, corrupt checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import medxfer
from medxfer.config import RunConfig
from medxfer.training.amp import Precision
from medxfer.training.checkpoints import LAST_STATE, load_training_state
from medxfer.training.context import LossTerm
from medxfer.training.trainer import Trainer
from medxfer.errors import CheckpointError
from medxfer.models import Backbone, build_network
from medxfer.plugins import create_plugin_manager


def tiny_network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2))
    b = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU())
    return build_network(Backbone(nn.Sequential(a, b), [a, b], 8, spatial_dims=2, in_channels=1), 2)


def batches(n: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(4, 1, 8, 8, generator=g),
             "label": torch.randint(0, 2, (4,), generator=g)} for _ in range(n)]


class Recorder:
    """Records hook calls and adds a retention and an auxiliary term."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx):
        self.calls.append("fit_start")
        assert ctx.optimizer is None

    @medxfer.hookimpl
    def medxfer_parameter_groups(self, ctx, base_lr):
        self.calls.append("parameter_groups")
        return None

    @medxfer.hookimpl
    def medxfer_epoch_start(self, ctx, epoch):
        self.calls.append(f"epoch_start:{epoch}")

    @medxfer.hookimpl
    def medxfer_extra_loss_terms(self, ctx, outputs):
        return [LossTerm("pre", outputs.new_tensor(2.0), role="retention"),
                LossTerm("aux", outputs.new_tensor(3.0), weight=0.5)]

    @medxfer.hookimpl
    def medxfer_after_backward(self, ctx, step):
        if "after_backward" not in self.calls:
            self.calls.append("after_backward")

    @medxfer.hookimpl
    def medxfer_epoch_end(self, ctx, epoch, metrics):
        self.calls.append(f"epoch_end:{epoch}")
        metrics["custom"] = 1.0

    @medxfer.hookimpl
    def medxfer_fit_end(self, ctx):
        self.calls.append("fit_end")


def make_trainer(tmp_path, epochs=2, plugin=None, model=None, **train):
    config = RunConfig.model_validate({"train": {"epochs": epochs, **train},
                                       "loss": {"alpha": 0.1, "beta": 2.0}})
    hooks = create_plugin_manager(load_entry_points=False)
    if plugin is not None:
        hooks.register(plugin, name="recorder")
    model = model or tiny_network()
    data = batches()
    loss_fn = nn.CrossEntropyLoss()

    def validate(net):
        with torch.no_grad():
            return {"val_loss": float(sum(loss_fn(net(b["image"]), b["label"]) for b in data))}

    return Trainer(config, model, hooks, torch.device("cpu"), Precision(None, "cpu"), tmp_path,
                   data, validate, loss_fn, ("val_loss", "min"), progress=False)



class KillAtEpoch2:
    """A plugin that interrupts training as epoch 2 starts, as Ctrl-C would."""

    @medxfer.hookimpl
    def medxfer_epoch_start(self, ctx, epoch):
        if epoch == 2:
            raise KeyboardInterrupt

def test_hooks_are_called_in_order_and_terms_are_combined(tmp_path):
    rec = Recorder()
    result = make_trainer(tmp_path, plugin=rec).fit()
    assert rec.calls == ["fit_start", "parameter_groups", "epoch_start:0", "after_backward",
                         "epoch_end:0", "epoch_start:1", "epoch_end:1", "fit_end"]
    first = result.history[0]
    assert first["train_L_pre"] == pytest.approx(2.0)
    assert first["train_aux"] == pytest.approx(3.0)
    # L_total = beta * L_new + alpha * L_pre + weight * aux
    assert first["train_loss"] == pytest.approx(2.0 * first["train_L_new"] + 0.1 * 2.0 + 0.5 * 3.0,
                                                rel=1e-5)
    assert first["custom"] == 1.0
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "model.json").is_file()
    assert (tmp_path / LAST_STATE).is_file()


def test_resume_continues_to_the_same_result(tmp_path):
    full = make_trainer(tmp_path / "full", epochs=3).fit()
    with pytest.raises(KeyboardInterrupt):  # killed after two of three epochs
        make_trainer(tmp_path / "part", epochs=3, plugin=KillAtEpoch2()).fit()
    resumed_trainer = make_trainer(tmp_path / "part", epochs=3, model=tiny_network(seed=5))
    resumed = resumed_trainer.fit(resume=True)
    assert len(resumed.history) == 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]  # counted from 1
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)


def test_resume_without_checkpoint_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        make_trainer(tmp_path / "empty").fit(resume=True)
    make_trainer(tmp_path / "run", epochs=1).fit()
    path = tmp_path / "run" / LAST_STATE
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_training_state(tmp_path / "run")


def test_early_stopping(tmp_path):
    trainer = make_trainer(tmp_path, epochs=20, early_stopping={"patience": 1},
                           optimizer={"lr": 10.0, "name": "sgd"})
    trainer.validate = lambda net: {"val_loss": 1.0}  # never improves after epoch 1
    result = trainer.fit()
    assert result.stopped_early and len(result.history) == 2 and result.best_epoch == 1


def test_select_last_keeps_and_delivers_the_final_epoch(tmp_path):
    from medxfer.training.checkpoints import load_model_weights

    trainer = make_trainer(tmp_path, epochs=3, early_stopping={"select": "last"})
    losses = iter([1.0, 3.0, 2.0])  # epoch 1 scores best: select: best would keep it
    weights = tmp_path / "model.safetensors"

    def validate(net):  # the weights are written once, after the final epoch
        assert not weights.exists()
        return {"val_loss": next(losses)}

    trainer.validate = validate
    result = trainer.fit()
    assert result.best_epoch == 3 and result.best_score == pytest.approx(-2.0)
    assert not result.stopped_early and len(result.history) == 3
    saved = load_model_weights(tmp_path / "model.safetensors")
    final = trainer.ctx.model.state_dict()
    assert all(torch.equal(saved[k], final[k]) for k in saved)


def test_select_last_killed_run_resumes_and_writes_the_final_weights(tmp_path):
    last = {"select": "last"}
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, epochs=3, plugin=KillAtEpoch2(), early_stopping=last).fit()
    assert not (tmp_path / "model.safetensors").exists()
    result = make_trainer(tmp_path, epochs=3, early_stopping=last).fit(resume=True)
    assert result.best_epoch == 3 and (tmp_path / "model.safetensors").is_file()


def test_select_best_keeps_the_best_epoch_not_the_last(tmp_path):
    trainer = make_trainer(tmp_path, epochs=3)
    losses = iter([1.0, 3.0, 2.0])
    trainer.validate = lambda net: {"val_loss": next(losses)}
    assert trainer.fit().best_epoch == 1


def test_select_last_with_patience_is_refused():
    with pytest.raises(ValueError, match="patience.*select: last"):
        RunConfig.model_validate({"train": {"early_stopping": {"select": "last", "patience": 3}}})


def test_on_exception_is_called_and_error_reraised(tmp_path):
    seen = []

    class Boom:
        @medxfer.hookimpl
        def medxfer_epoch_end(self, ctx, epoch, metrics):
            raise RuntimeError("boom")

        @medxfer.hookimpl
        def medxfer_on_exception(self, ctx, exception):
            seen.append(str(exception))

    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(tmp_path, plugin=Boom()).fit()
    assert seen == ["boom"]


def test_schedule_factors():
    from medxfer.training.schedule import lr_factor

    assert lr_factor("constant", 5, 10, 0) == 1.0
    assert lr_factor("cosine", 0, 10, 2) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10, 0) == pytest.approx(0.0)
    peak = max(lr_factor("onecycle", s, 100, 0) for s in range(100))
    assert peak == pytest.approx(1.0) and lr_factor("onecycle", 0, 100, 0) == pytest.approx(1 / 25)
    assert not math.isnan(lr_factor("cosine", 3, 1, 0))


def test_bf16_autocast_trains_on_cpu(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.precision = Precision(torch.bfloat16, "cpu")
    result = trainer.fit()
    assert math.isfinite(result.history[0]["train_loss"])


def test_precision_choices():
    from medxfer.training.amp import resolve_precision
    from medxfer.errors import ConfigError

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).describe() == "fp32"
    assert resolve_precision("bf16", cpu).describe() == "bf16"
    assert not resolve_precision("bf16", cpu).needs_scaler
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)
    assert resolve_precision("fp16", torch.device("cuda")).needs_scaler


class TargetRecorder:
    """Records what the trainer gives a domain-adaptation plugin."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.domains: list[str] = []
        self.extra = nn.Linear(8, 1)

    @medxfer.hookimpl
    def medxfer_extra_parameter_groups(self, ctx, base_lr):
        return [{"params": list(self.extra.parameters()), "name": "extra", "lr": base_lr}]

    @medxfer.hookimpl
    def medxfer_extra_loss_terms(self, ctx, batch, features, target_batch, target_features,
                                 target_outputs):
        self.seen.append((target_batch["image"].shape[0], tuple(target_features.shape),
                          tuple(target_outputs.shape), "label" in target_batch))
        return [LossTerm("extra", self.extra(target_features).mean() * 0.0)]


class DomainProbe(nn.Module):
    """Records the domain the trainer sets before each forward pass."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log, self.domain = log, "source"

    def set_domain(self, domain):
        self.domain = domain

    def forward(self, x):
        self.log.append(self.domain)
        return x


def test_target_batches_domains_and_extra_parameter_groups(tmp_path):
    recorder = TargetRecorder()
    model = tiny_network()
    model.backbone.body.insert(0, DomainProbe(recorder.domains))
    trainer = make_trainer(tmp_path, epochs=1, plugin=recorder, model=model)
    target = [{"image": b["image"][:3]} for b in batches(6)]  # longer than the 4 source batches
    trainer.ctx.target_loader = target
    trainer.draws_target = True
    trainer.fit()
    assert len(recorder.seen) == 6  # the longer (target) loader sets the epoch; source cycles
    assert recorder.seen[0] == (3, (3, 8), (3, 2), False)
    assert "extra" in [g.get("name") for g in trainer.ctx.optimizer.param_groups]
    train_domains = recorder.domains[:12]
    assert train_domains == ["source", "target"] * 6
    assert set(recorder.domains[12:]) == {"source"}  # validation runs in the source domain



def test_ema_scores_saves_and_delivers_the_weight_average(tmp_path):
    from medxfer.training.checkpoints import load_model_weights

    trainer = make_trainer(tmp_path, epochs=3, ema=0.9)
    validate, scored = trainer.validate, []

    def spy(net):
        assert net is trainer.ema.module and net is not trainer.ctx.model
        metrics = validate(net)  # (this test's validate runs batch norm in training mode)
        scored.append({k: v.clone() for k, v in net.state_dict().items()})
        return metrics

    trainer.validate = spy
    result = trainer.fit()
    assert len(scored) == 3
    saved = load_model_weights(tmp_path / "model.safetensors")
    best = scored[result.best_epoch - 1]  # best_epoch counts from 1
    assert all(torch.equal(saved[k], best[k]) for k in saved)
    delivered = trainer.ctx.model.state_dict()
    assert all(torch.equal(delivered[k], best[k]) for k in saved)


def test_ema_resume_continues_the_average(tmp_path):
    full = make_trainer(tmp_path / "full", epochs=3, ema=0.8).fit()

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path / "part", epochs=3, plugin=KillAtEpoch2(), ema=0.8).fit()
    resumed = make_trainer(tmp_path / "part", epochs=3, model=tiny_network(seed=5),
                           ema=0.8).fit(resume=True)
    for a, b in zip(full.history, resumed.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)


def test_ema_resume_of_a_run_without_an_average_is_refused(tmp_path):
    make_trainer(tmp_path, epochs=1).fit()
    with pytest.raises(CheckpointError, match="train.ema"):
        make_trainer(tmp_path, epochs=2, ema=0.8).fit(resume=True)


def test_a_checkpoint_of_zero_based_epochs_resumes_counted_from_one(tmp_path):
    """Checkpoints written before epochs were counted from 1 hold 0-based history rows."""
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, epochs=3, plugin=KillAtEpoch2()).fit()
    state = load_training_state(tmp_path)
    state["history"] = [{**row, "epoch": row["epoch"] - 1} for row in state["history"]]
    torch.save(state, tmp_path / LAST_STATE)
    resumed = make_trainer(tmp_path, epochs=3).fit(resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert 1 <= resumed.best_epoch <= 3


class MetricLogger:
    """A logger: records what ``medxfer_log_metrics`` and ``medxfer_log_summary`` get."""

    def __init__(self) -> None:
        self.logged: list[tuple[int, dict]] = []

    @medxfer.hookimpl
    def medxfer_log_metrics(self, ctx, epoch, metrics):
        self.logged.append((epoch, dict(metrics)))


class AddsAMetric:
    """A plugin that adds a metric at the end of each epoch."""

    @medxfer.hookimpl
    def medxfer_epoch_end(self, ctx, epoch, metrics):
        metrics["plugin_metric"] = 10.0 + epoch


class AddsAMetricFirst:
    @medxfer.hookimpl(tryfirst=True)
    def medxfer_epoch_end(self, ctx, epoch, metrics):
        metrics["plugin_metric"] = 10.0 + epoch


class AddsAMetricLast:
    @medxfer.hookimpl(trylast=True)
    def medxfer_epoch_end(self, ctx, epoch, metrics):
        metrics["plugin_metric"] = 10.0 + epoch


@pytest.mark.parametrize("plugin_class", [AddsAMetric, AddsAMetricFirst, AddsAMetricLast])
@pytest.mark.parametrize("logger_first", [True, False])
def test_plugin_metrics_reach_every_logger_whatever_the_hook_order(tmp_path, plugin_class,
                                                                   logger_first):
    loggers = [MetricLogger(), MetricLogger()]
    trainer = make_trainer(tmp_path, epochs=2)
    manager = create_plugin_manager(load_entry_points=False)
    plugins = [(f"logger{i}", logger) for i, logger in enumerate(loggers)]
    plugins.insert(len(plugins) if logger_first else 0, ("adds", plugin_class()))
    for name, plugin in plugins:
        manager.register(plugin, name=name)
    trainer.hooks = manager.hook
    result = trainer.fit()
    for logger in loggers:
        assert [epoch for epoch, _ in logger.logged] == [1, 2]  # counted from 1
        assert [m["plugin_metric"] for _, m in logger.logged] == [10.0, 11.0]
        assert [m["epoch"] for _, m in logger.logged] == [1, 2]
    assert [h["plugin_metric"] for h in result.history] == [10.0, 11.0]


def test_without_a_terminal_progress_lines_and_an_eta_per_epoch_are_printed(
        tmp_path, monkeypatch, capsys):
    """A log file sees a line at least every 30 s and, per epoch, the time and the ETA."""
    from medxfer import progress

    clock = iter(range(0, 10**6, 31))  # every reading is 31 s after the one before
    monkeypatch.setattr(progress, "monotonic", lambda: float(next(clock)))
    trainer = make_trainer(tmp_path, epochs=2)
    trainer.progress = True
    trainer.fit()
    err = capsys.readouterr().err.splitlines()
    steps = [line for line in err if line.startswith("epoch 1/2: ")]
    assert steps[0].startswith("epoch 1/2: 1/4 steps (25%), loss ") and "ETA" in steps[0]
    assert steps[-1].startswith("epoch 1/2: 4/4 steps done in")
    assert steps[-1].endswith("validating")
    ends = [line for line in err if line.startswith(("epoch 1/2  loss", "epoch 2/2  loss"))]
    assert len(ends) == 2 and "/epoch, ETA " in ends[0] and "ETA" not in ends[1]
