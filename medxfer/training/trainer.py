"""The training loop. It calls lifecycle hooks and knows no plugin by name."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from medxfer.config import RunConfig
from medxfer.training import distributed as D
from medxfer.training import shards
from medxfer.training.amp import Precision, to_channels_last
from medxfer.training.checkpoints import (
    BEST_WEIGHTS,
    load_model_weights,
    load_training_state,
    read_sidecar,
    rng_state,
    save_model,
    save_training_state,
    set_rng_state,
)
from medxfer.training.compiling import begin_step
from medxfer.training.context import FitContext, LossTerm
from medxfer.training.loaders import data_random_state, set_data_random_state
from medxfer.training.ema import WeightAverage
from medxfer.training.schedule import apply_lr, lr_factor
from medxfer.errors import CheckpointError, TrainingError
from medxfer.models.domain import SOURCE, TARGET, set_domain
from medxfer.plugins import MedxferPluginManager
from medxfer.progress import format_duration, progress, write_line

#: Evaluate the model on validation data: returns metrics such as ``val_loss``, ``val_auc``.
ValidateFn = Callable[[nn.Module], dict[str, float]]


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` produced.

    Epochs are counted from 1, as people count them (the console, the report,
    ``metrics.json``, TensorBoard): ``best_epoch`` and every ``history[i]["epoch"]``.
    """

    history: list[dict[str, float]]
    best_epoch: int
    best_score: float
    monitor: str
    train_seconds: float
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Trainer:
    """Trains a :class:`~medxfer.models.TransferNetwork`, calling lifecycle hooks.

    In a distributed run (:mod:`medxfer.training.distributed`) each step's forward goes
    through DistributedDataParallel, the training metrics are averaged over the ranks,
    rank 0's validation metrics decide (every rank computes the same ones), and only
    rank 0 writes checkpoints; a resumed run broadcasts rank 0's checkpoint.

    Args:
        config: The resolved run config.
        model: The network, already on ``device``.
        hooks: The run's plugin manager (strategy and domain adaptation registered).
        device: Training device.
        precision: Autocast dtype and scaler choice.
        run_dir: The run folder (checkpoints are written there).
        train_loader: Labelled training batches (dicts with ``image`` and ``label``).
        validate: Computes validation metrics for the model.
        loss_fn: The task loss ``L_new(outputs, labels)``.
        monitor: ``(metric name, "max" | "min")`` for best-checkpoint selection.
        target_loader: Optional unlabelled target-domain batches (domain adaptation): one
            is drawn beside every source batch, the shorter loader cycling.
        draw_target_batches: ``False`` keeps ``target_loader`` in the fit context for the
            plugins (AdaBN reads it after training) without drawing target batches.
        sidecar: Extra facts written beside the saved model.
        progress: Report progress on standard error: a bar on a terminal, a line at least
            every 30 s elsewhere (a log file), and one line per epoch.
    """

    def __init__(self, config: RunConfig, model: nn.Module, hooks: MedxferPluginManager,
                 device: torch.device, precision: Precision, run_dir: Path,
                 train_loader: Any, validate: ValidateFn, loss_fn: Callable[..., torch.Tensor],
                 monitor: tuple[str, str], *, target_loader: Any = None,
                 draw_target_batches: bool = True,
                 sidecar: dict[str, Any] | None = None, progress: bool = True) -> None:
        self.config = config
        self.hooks = hooks.hook
        self.device = device
        self.precision = precision
        self.run_dir = Path(run_dir)
        self.train_loader = train_loader
        self.validate = validate
        self.loss_fn = loss_fn
        self.monitor, self.mode = monitor
        self.sidecar = sidecar or {}
        self.progress = progress
        self.draws_target = target_loader is not None and draw_target_batches
        self.ctx = FitContext(config=config, model=model, device=device,
                              max_epochs=config.train.epochs, run_dir=self.run_dir,
                              target_loader=target_loader, train_loader=train_loader,
                              base_lr=config.train.optimizer.lr)

    # -- setup ----------------------------------------------------------------------------

    def _build_optimizer(self) -> torch.optim.Optimizer:
        opt = self.config.train.optimizer
        groups = self.hooks.medxfer_parameter_groups(ctx=self.ctx, base_lr=opt.lr)
        if groups is None:
            params = [p for p in self.ctx.model.parameters() if p.requires_grad]
            groups = [{"params": params, "name": "all"}]
        for extra in self.hooks.medxfer_extra_parameter_groups(ctx=self.ctx, base_lr=opt.lr):
            groups = list(groups) + list(extra or [])
        groups = [g for g in groups if list(g["params"])]
        if not groups:
            raise RuntimeError("the strategy left no trainable parameters")
        for g in groups:
            g["params"] = list(g["params"])
            g.setdefault("lr", opt.lr)
        if opt.name == "sgd":
            return torch.optim.SGD(groups, lr=opt.lr, momentum=opt.momentum,
                                   weight_decay=opt.weight_decay, nesterov=True)
        return torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay)

    def _steps_per_epoch(self) -> int:
        steps = len(self.train_loader)
        if self.draws_target:
            steps = max(steps, len(self.ctx.target_loader))
        return max(steps, 1)

    # -- the loop -------------------------------------------------------------------------

    def fit(self, *, resume: bool = False) -> FitResult:
        """Train for the configured epochs (continuing a killed run when ``resume``)."""
        ctx = self.ctx
        self.hooks.medxfer_fit_start(ctx=ctx)
        state = None
        if resume:  # rank 0 reads the checkpoint; the other ranks get it by broadcast
            state = D.from_rank_zero(load_training_state(self.run_dir) if D.is_main() else None)
        start_epoch = int(state["epoch"]) + 1 if state else 0
        ctx.epoch = start_epoch
        ctx.optimizer = self._build_optimizer()
        scaler = self.precision.scaler()
        history: list[dict[str, float]] = _numbered(state["history"]) if state else []
        best_score = float(state["best_score"]) if state else -math.inf
        # The checkpoint keeps the zero-based index of the best epoch, as it always has.
        best_index = int(state["best_epoch"]) if state else -1
        bad_epochs = int(state.get("bad_epochs", 0)) if state else 0
        seconds = float(state.get("train_seconds", 0.0)) if state else 0.0
        self.ema = (WeightAverage(ctx.model, self.config.train.ema)
                    if self.config.train.ema else None)
        if state:
            self._restore(state, scaler)
        self._step: Callable[..., Any] = self._step_loss
        if D.is_active():
            self._step = D.DistributedStep(ctx.model, self._step_loss, lambda: ctx.optimizer,
                                           self.device, self.config.train.ddp)
        # train.time_limit may lower the epochs as training goes, and raise them up to
        # train.max_epochs (the count is kept in the checkpoint)
        self.epochs = int(state.get("epochs", self.config.train.epochs)) if state \
            else self.config.train.epochs
        ctx.max_epochs = self.epochs
        total_steps = self._steps_per_epoch() * self.epochs
        warmup = int(self.config.train.scheduler.warmup_epochs * self._steps_per_epoch())
        ctx.step = start_epoch * self._steps_per_epoch()
        ctx.total_steps = total_steps
        patience = self.config.train.early_stopping.patience
        # select: last takes every epoch in turn and writes the weights once, after the
        # final epoch (patience is refused beside it, so training always gets there).
        keep_last = self.config.train.early_stopping.select == "last"
        final_epoch = self.epochs - 1
        stopped = False
        try:
            most = max(self.config.train.epochs, self.config.train.max_epochs or 0)
            for epoch in range(start_epoch, most):
                if epoch >= self.epochs:  # lowered (or not raised) by train.time_limit
                    break
                ctx.epoch = epoch
                tic = time.perf_counter()
                ctx.model.train()
                shards.set_epoch([self.train_loader, ctx.target_loader], epoch)
                self.hooks.medxfer_epoch_start(ctx=ctx, epoch=epoch)
                metrics = self._train_epoch(epoch, scaler, total_steps, warmup)
                self._check_finite(metrics, epoch)
                # With train.ema the weight average is what is scored, kept and delivered.
                scored = self.ema.module if self.ema is not None else ctx.model
                if ctx.target_loader is not None:
                    set_domain(scored, SOURCE)  # validation data is source data
                D.broadcast_state(scored, buffers_only=True)  # batch-norm statistics
                # Every rank computes the same metrics; rank 0's are the ones that decide.
                metrics.update(D.from_rank_zero(self.validate(scored)))
                metrics["epoch"] = epoch + 1  # as people count: the first epoch is 1
                metrics["lr"] = max(g["lr"] for g in ctx.optimizer.param_groups)
                self.hooks.medxfer_epoch_end(ctx=ctx, epoch=epoch, metrics=metrics)
                seconds += time.perf_counter() - tic
                metrics["seconds"] = seconds
                before, refit = self.epochs, None
                if self._fit_time_limit(epoch, seconds):
                    refit = (f"train.time_limit: {before} -> {self.epochs} epochs, "
                             f"{format_duration(seconds / (epoch + 1))} each so far, "
                             f"{format_duration(self.config.train.time_limit - seconds)} "
                             "of the limit left")
                    total_steps = self._steps_per_epoch() * self.epochs
                    ctx.total_steps, ctx.max_epochs = total_steps, self.epochs
                    final_epoch = self.epochs - 1
                    metrics["epochs"] = self.epochs
                history.append(metrics)
                # After every epoch_end implementation: loggers see what plugins added.
                self.hooks.medxfer_log_metrics(ctx=ctx, epoch=epoch + 1, metrics=metrics)
                if self.progress:
                    print_epoch(metrics, epochs=self.epochs, monitor=self.monitor,
                                seconds_per_epoch=seconds / len(history))
                    if refit:
                        write_line(refit)
                score = self._score(metrics)
                if keep_last or score > best_score or best_index < 0:
                    best_score, best_index, bad_epochs = score, epoch, 0
                    if D.is_main() and (not keep_last or epoch == final_epoch):
                        save_model(self.run_dir, scored,
                                   {**self.sidecar, "epoch": epoch + 1, "monitor": self.monitor,
                                    "score": metrics.get(self.monitor)})
                else:
                    bad_epochs += 1
                stopped = patience is not None and bad_epochs >= patience
                # every rank's own random streams (data order, augmentation, dropout)
                streams = D.all_gather({"rng": rng_state(), "data": data_random_state(
                    [self.train_loader, ctx.target_loader])})
                self._save_state({
                    "model": ctx.model.state_dict(), "optimizer": ctx.optimizer.state_dict(),
                    "scaler": scaler.state_dict(), "epoch": epoch, "history": history,
                    "best_score": best_score, "best_epoch": best_index,
                    "bad_epochs": bad_epochs, "train_seconds": seconds, "epochs": self.epochs,
                    "rng": streams[D.rank()]["rng"],
                    "stopped": stopped, "plugin_state": _tensor_state(ctx.state),
                    "rank_streams": streams,
                    "ema": None if self.ema is None else self.ema.state_dict()})
                if stopped:
                    break
            self._fit_end()
        except BaseException as exc:
            self.hooks.medxfer_on_exception(ctx=ctx, exception=exc)
            raise
        extra = {} if self.epochs == self.config.train.epochs else \
            {"time_limit": {"seconds": self.config.train.time_limit,
                            "epochs_configured": self.config.train.epochs,
                            "epochs": self.epochs}}
        return FitResult(history, best_index + 1, best_score, self.monitor, seconds, stopped,
                         extra)

    def _fit_time_limit(self, epoch: int, seconds: float) -> bool:
        """Fit the epochs to ``train.time_limit`` at the pace so far (the mean time of the
        epochs run); returns whether they changed.

        Lowered whenever they do not fit. Raised, up to ``train.max_epochs``, only in the
        first half of training and by at least a tenth (or one epoch), so that the
        learning-rate schedule is stretched while the rate is still high and does not
        follow every small change of pace. ``seconds`` is the training and validation time
        of the epochs up to ``epoch``.
        """
        limit = self.config.train.time_limit
        if not limit or epoch + 1 >= self.epochs:
            return False
        pace = seconds / (epoch + 1)
        fit = epoch + 1 + int(max(limit - seconds, 0.0) // pace)
        if fit > self.epochs:
            most = self.config.train.max_epochs
            early = 2 * (epoch + 1) <= self.epochs
            enough = fit >= self.epochs + max(1, self.epochs // 10)
            fit = min(fit, most) if most is not None and early and enough else self.epochs
        fit = D.from_rank_zero(fit)  # one decision for every rank of a distributed run
        if fit == self.epochs:
            return False
        self.epochs = fit
        return True

    def _save_state(self, state: dict[str, Any]) -> None:
        if D.is_main():
            save_training_state(self.run_dir, state)

    def _fit_end(self) -> None:
        """Give ``medxfer_fit_end`` the selected model, then save what it made of it.

        The best epoch's weights are loaded first (by rank 0, then broadcast), so that a
        hook that recomputes statistics (AdaBN) acts on the model that is evaluated and
        delivered. Only rank 0 saves.
        """
        ctx = self.ctx
        best = self.run_dir / BEST_WEIGHTS
        # Hooks that read data now see the whole training (and target) set, as in one process.
        ctx.train_loader = shards.whole_loader(ctx.train_loader)
        ctx.target_loader = shards.whole_loader(ctx.target_loader)
        if D.is_main() and best.is_file():
            ctx.model.load_state_dict(load_model_weights(best))
        D.broadcast_state(ctx.model)
        self.hooks.medxfer_fit_end(ctx=ctx)
        if ctx.target_loader is not None:
            set_domain(ctx.model, SOURCE)
        if D.is_main() and best.is_file():
            save_model(self.run_dir, ctx.model, read_sidecar(self.run_dir))

    def _restore(self, state: dict[str, Any], scaler: torch.amp.GradScaler) -> None:
        ctx = self.ctx
        try:
            ctx.model.load_state_dict(state["model"])
            ctx.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(
                f"checkpoint in {str(self.run_dir)!r} does not match this model/config "
                f"({exc}); resume with the run's own config.yaml") from None
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if not state.get("ema"):
                raise CheckpointError(
                    f"checkpoint in {str(self.run_dir)!r} has no weight average but the config "
                    "sets train.ema; resume with the run's own config.yaml")
            self.ema.load_state_dict(state["ema"])
        ctx.state.update(state.get("plugin_state") or {})
        set_rng_state(state["rng"])
        streams = state.get("rank_streams")  # absent in checkpoints before it was saved
        if streams and len(streams) == D.world_size():  # the same processes as before
            mine = streams[D.rank()]
            set_rng_state(mine["rng"])
            set_data_random_state([self.train_loader, ctx.target_loader], mine["data"])

    def _check_finite(self, metrics: dict[str, float], epoch: int) -> None:
        """Stop with a clear message when the epoch's mean training loss is nan or inf.

        The weights are then no longer usable; the last checkpoint (the epoch before) is
        kept, and nothing of this epoch is saved.
        """
        loss = metrics.get("train_loss", 0.0)
        if math.isfinite(loss):
            return
        lr = max(g["lr"] for g in self.ctx.optimizer.param_groups)
        done = "epoch 1" if epoch == 1 else f"epochs 1-{epoch}"
        kept = (f"; {self.run_dir} keeps what {done} trained (not a finished run)"
                if epoch > 0 else "")
        raise TrainingError(
            f"training diverged in epoch {epoch + 1}: the mean training loss is {loss} "
            f"(learning rate {lr:.3g}). Lower train.optimizer.lr, set train.grad_clip, or "
            f"check the data and labels, then start a new run{kept}")

    def _score(self, metrics: dict[str, float]) -> float:
        value = metrics.get(self.monitor, float("nan"))
        if value is None or math.isnan(value):
            return -math.inf
        return value if self.mode == "max" else -value

    def _batches(self) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        if not self.draws_target:
            for batch in self.train_loader:
                yield batch, None
            return
        # One source and one target batch per step; the shorter loader cycles.
        source_iter, target_iter = _Cycle(self.train_loader), _Cycle(self.ctx.target_loader)
        for _ in range(self._steps_per_epoch()):
            yield next(source_iter), next(target_iter)

    def _train_epoch(self, epoch: int, scaler: torch.amp.GradScaler, total_steps: int,
                     warmup: int) -> dict[str, float]:
        ctx, cfg = self.ctx, self.config
        sums: dict[str, torch.Tensor] = {}
        n_steps = 0
        with progress(f"epoch {epoch + 1}/{self.epochs}", self._steps_per_epoch(),
                      enabled=self.progress, next_step="validating") as advance:
            for batch, target_batch in self._batches():
                apply_lr(ctx.optimizer, lr_factor(cfg.train.scheduler.name, ctx.step,
                                                  total_steps, warmup))
                begin_step(ctx.model)  # train.compile: cudagraphs
                loss, l_new, terms = self._step(batch, target_batch)
                ctx.optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(ctx.optimizer)
                self.hooks.medxfer_after_backward(ctx=ctx, step=ctx.step)
                if cfg.train.grad_clip:
                    torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), cfg.train.grad_clip)
                scaler.step(ctx.optimizer)
                scaler.update()
                if self.ema is not None:
                    self.ema.update(ctx.model)
                _accumulate(sums, "train_loss", loss)
                _accumulate(sums, "train_L_new", l_new)
                if terms:
                    retention = [t.value for t in terms if t.role == "retention"]
                    if retention:
                        _accumulate(sums, "train_L_pre", torch.stack(
                            [r.float() for r in retention]).sum())
                    for term in terms:
                        _accumulate(sums, f"train_{term.name}", term.value)
                ctx.step += 1
                n_steps += 1
                advance(lambda: f"loss {float(loss.detach()):.4f}")  # read only when shown
        sums = D.average_scalars(sums, self.device)  # the mean over ranks
        return {k: float(v) / max(n_steps, 1) for k, v in sums.items()}

    def _step_loss(self, batch: dict[str, Any], target_batch: dict[str, Any] | None
                   ) -> tuple[torch.Tensor, torch.Tensor, list[LossTerm]]:
        """One step's forward: the network on the source (and target) batch, the task loss
        and the plugins' loss terms. Returns ``(total loss, L_new, extra terms)``.

        In a distributed run this is the forward of the module that DDP wraps
        (:class:`medxfer.training.distributed.DistributedStep`).
        """
        ctx, cfg = self.ctx, self.config
        images = batch["image"].to(self.device, non_blocking=True)
        if cfg.train.channels_last:
            images = to_channels_last(images)
        labels = batch["label"].to(self.device, non_blocking=True)
        target_images = target_features = target_outputs = None
        with self.precision.autocast():
            if target_batch is not None:
                set_domain(ctx.model, SOURCE)
            outputs, features = ctx.model.forward_features(images)
            if target_batch is not None:
                target_images = target_batch["image"].to(self.device, non_blocking=True)
                set_domain(ctx.model, TARGET)
                target_outputs, target_features = ctx.model.forward_features(target_images)
                set_domain(ctx.model, SOURCE)
            l_new = self.loss_fn(outputs, labels)
            terms = [t for ts in self.hooks.medxfer_extra_loss_terms(
                ctx=ctx, batch={**batch, "image": images, "label": labels},
                outputs=outputs, features=features,
                target_batch=(None if target_batch is None
                              else {**target_batch, "image": target_images}),
                target_features=target_features, target_outputs=target_outputs)
                if ts for t in ts]
            loss = cfg.loss.beta * l_new + _combine(terms, cfg.loss.alpha)
        return loss, l_new, terms


class _Cycle:
    """Endless iteration over a loader, starting a new pass (a new shuffle) when one ends."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.iterator = iter(loader)

    def __next__(self) -> Any:
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)


def print_epoch(metrics: dict[str, float], *, epochs: int, monitor: str,
                seconds_per_epoch: float) -> None:
    """One line per finished epoch: its number, the losses, the monitored metric, the time
    an epoch takes and the ETA of the run (``epoch 2/5  loss 0.4123  val_loss 0.3991
    val_auc 0.9120  (1 min 05 s/epoch, ETA 3 min 15 s)``)."""
    epoch = int(metrics["epoch"])
    shown = [f"epoch {epoch}/{epochs}", f"loss {metrics.get('train_loss', float('nan')):.4f}"]
    for key in dict.fromkeys(("val_loss", monitor)):
        if key in metrics:
            shown.append(f"{key} {metrics[key]:.4f}")
    timing = f"{format_duration(seconds_per_epoch)}/epoch"
    if epoch < epochs:
        timing += f", ETA {format_duration(seconds_per_epoch * (epochs - epoch))}"
    write_line("  ".join(shown) + f"  ({timing})")


def _combine(terms: list[LossTerm], alpha: float) -> torch.Tensor | float:
    total: torch.Tensor | float = 0.0
    for term in terms:
        scale = alpha if term.role == "retention" else term.weight
        total = total + scale * term.value
    return total


def _accumulate(sums: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    value = value.detach().float()
    sums[key] = sums[key] + value if key in sums else value


def _numbered(history: list[dict[str, float]]) -> list[dict[str, float]]:
    """A checkpoint's history with each row's ``epoch`` its 1-based position (checkpoints
    written before epochs were counted from 1 stored 0-based numbers)."""
    return [{**row, "epoch": i + 1} for i, row in enumerate(history)]


def _tensor_state(state: dict[str, Any]) -> dict[str, Any]:
    """The part of the plugins' shared state that can be checkpointed safely."""
    return {k: v for k, v in state.items()
            if not k.startswith("_") and isinstance(v, (int, float, str, bool, torch.Tensor))}
