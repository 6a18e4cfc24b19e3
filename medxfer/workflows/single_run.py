"""One network trained, selected, evaluated and reported into its run folder."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from medxfer.config import RunConfig, write_resolved_config
from medxfer.data import load_data
from medxfer.metrics import VALIDATION_METRICS, select_monitor_metric
from medxfer.planning.plan import read_plan
from medxfer.plugin_kit import attributes as plugin_attributes
from medxfer.plugins import MedxferPluginManager, Registries, create_plugin_manager
from medxfer.progress import reporting, write_line
from medxfer.tasks import task_of
from medxfer.training import distributed as D
from medxfer.training.amp import channels_last_format, resolve_device
from medxfer.training.checkpoints import BEST_WEIGHTS, load_model_weights
from medxfer.training.compiling import compile_network, run_compile_setting
from medxfer.training.loaders import make_loader
from medxfer.training.seeding import seed_everything
from medxfer.training.trainer import Trainer
from medxfer.workflows import domain as DA
from medxfer.workflows.preflight import random_start_warning
from medxfer.workflows.run_setup import (
    backbone_weights,
    choose_run_precision,
    resolve_tta_axes,
    write_splits,
)


def train_single(config: RunConfig, run_dir: Path, *, registries: Registries, resume: bool,
                 progress: bool = True, cache_dir: Path | None = None) -> dict[str, Any]:
    """Train one network of a resolved ``config`` into ``run_dir`` (continuing it when
    ``resume``), then evaluate and report it; see
    :func:`medxfer.workflows.run.run_pipeline`.

    The run's loggers (``tracking``) receive every epoch's metrics and, after the final
    evaluation, the summary (``medxfer_log_summary``); when the evaluation fails they get
    ``medxfer_on_exception``, as when training does. With ``progress`` (on the main
    process) slow steps report their progress on standard error, filling a data cache too.

    Returns:
        The summary also written to ``metrics.json``.
    """
    with reporting(progress and D.is_main()):
        return _train_single(config, run_dir, registries=registries, resume=resume,
                             progress=progress, cache_dir=cache_dir)


def fit_for_validation(config: RunConfig, run_dir: Path, *,
                       registries: Registries) -> dict[str, Any]:
    """Train one network of ``config`` into ``run_dir`` and score it on validation only:
    no test evaluation, report or loggers (what ``--search`` compares candidates by).

    Returns:
        ``best_score`` (the monitored validation metric, higher is better: a metric to
        minimise is negated), ``best_value`` (the metric as measured), ``best_epoch``,
        ``monitor``, ``epochs_run`` and ``train_seconds``.
    """
    config = config.model_copy(update={"tracking": []})
    with reporting(False):
        result = _train_single(config, run_dir, registries=registries, resume=False,
                               progress=False, cache_dir=None, evaluate=False)
    return result


def create_loggers(config: RunConfig, registries: Registries) -> list[tuple[str, Any]]:
    """The run's loggers (``tracking``), each with the name it is registered under."""
    return [(f"logger:{spec.name}:{index}",
             registries.logger.create(spec.name, key=f"tracking[{index}]", **spec.kwargs))
            for index, spec in enumerate(config.tracking)]


def _train_single(config: RunConfig, run_dir: Path, *, registries: Registries, resume: bool,
                  progress: bool, cache_dir: Path | None,
                  evaluate: bool = True) -> dict[str, Any]:
    adaptation = DA.create_method(config, registries)
    main = D.is_main()
    progress = progress and main
    # Before the data is read: a logger that cannot work (MLflow not installed) stops now.
    loggers = create_loggers(config, registries) if main else []
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if main and not resume:
        write_resolved_config(config, run_dir)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed, deterministic=config.train.deterministic)

    strategy_spec = config.strategy
    strategy = registries.strategy.create(strategy_spec.name, key="strategy",
                                          **strategy_spec.kwargs)
    backbone_spec = config.model.backbone
    backbone_kwargs, pretrained, imagenet_norm = backbone_weights(
        config, registries, use_weights=plugin_attributes.uses_pretrained(strategy))

    cache_dir = run_dir / "cache" if cache_dir is None else cache_dir
    bundle = load_data(config, imagenet_norm=imagenet_norm, cache_dir=cache_dir)
    if main:
        write_splits(run_dir / "splits.csv", bundle.cases)
    target = None
    if config.data.target is not None:
        target = DA.load_target_data(config, bundle, imagenet_norm=imagenet_norm,
                                    cache_dir=cache_dir / "target")
    task = task_of(config)
    model, backbone = task.build_network(config, registries, bundle, backbone_kwargs)
    tta_axes = resolve_tta_axes(config, bundle.spatial_dims)
    if tta_axes:
        model.tta_axes = tta_axes
    device = D.worker_device(config.train.device) if D.is_active() \
        else resolve_device(config.train.device)
    compile_setting = run_compile_setting(config.train.compile, device)
    model.to(device)
    if D.is_active():
        # Each rank draws its own augmentations and dropout masks; the initial weights
        # are already alike on every rank (and DDP starts from rank 0's).
        torch.manual_seed(D.rank_seed(config.train.seed))
        bundle.train.seed = D.rank_seed(config.train.seed)
        if target is not None:  # the target domain's training augmentation too
            target.train.seed = D.rank_seed(config.train.seed)
    if config.train.channels_last:
        model.to(memory_format=channels_last_format(bundle.spatial_dims))

    hooks = create_plugin_manager(load_entry_points=False)
    hooks.register(strategy, name=f"strategy:{strategy_spec.name}")
    if adaptation is not None:
        hooks.register(adaptation, name=f"domain_adaptation:{config.domain_adaptation.name}")
    for name, logger in loggers:
        hooks.register(logger, name=name)

    train_loader = make_loader(bundle.train, config, train=True, labels=bundle.train_labels,
                               device=device)
    val_loader = make_loader(bundle.val, config, train=False, device=device)
    test_loader = make_loader(bundle.test, config, train=False, device=device)
    loss_fn = task.loss(config, bundle.train_labels, bundle.num_classes, device)
    # before SyncBatchNorm and compiling: the probe trains copies of the network alone
    precision, precision_choice = choose_run_precision(
        config, model, device, train_loader, loss_fn, compile_setting=compile_setting)
    if precision_choice is not None and progress:
        write_line(precision_choice.describe())
    model = D.sync_batchnorm(model, device, config.train.sync_batchnorm)
    compile_network(model, compile_setting)

    monitor = select_monitor_metric(config.task, config.train.early_stopping.metric,
                                    available=VALIDATION_METRICS[config.task])
    validate = task.validator(config, bundle, val_loader, device, precision, loss_fn)
    monitor_key = monitor[0] if monitor[0].startswith("val_") else f"val_{monitor[0]}"
    described = plugin_attributes.describe_plugin(strategy)
    sidecar = {"backbone": backbone_spec.model_dump(), "strategy": strategy_spec.model_dump(),
               "task": config.task, "num_classes": bundle.num_classes,
               "class_names": bundle.class_names, "in_channels": bundle.in_channels,
               "spatial_dims": bundle.spatial_dims, "imagenet_norm": imagenet_norm,
               "tta_axes": tta_axes}
    if adaptation is not None:
        sidecar["domain_adaptation"] = DA.describe_method(adaptation, config)
    trainer = Trainer(config, model, hooks, device, precision, run_dir, train_loader, validate,
                      loss_fn, (monitor_key, monitor[1]), sidecar=sidecar, progress=progress,
                      target_loader=None if adaptation is None else
                      DA.target_train_loader(config, target, device),
                      draw_target_batches=plugin_attributes.draws_target_batches(adaptation))
    tic = time.perf_counter()
    result = trainer.fit(resume=resume)
    if not evaluate:
        best = result.history[result.best_epoch - 1] if result.history else {}
        return {"best_score": result.best_score, "best_epoch": result.best_epoch,
                "monitor": result.monitor, "best_value": best.get(result.monitor),
                "epochs_run": len(result.history), "train_seconds": result.train_seconds}
    if main:
        model.load_state_dict(load_model_weights(run_dir / BEST_WEIGHTS))
    D.broadcast_state(model)
    run_info = {
        "backbone": backbone_spec.name,
        "strategy": described if described is not None else {"name": strategy_spec.name},
        "pretrained": str(pretrained),
        "load_report": backbone.load_report.as_dict() if backbone.load_report else None,
        "device": str(device), "precision": precision.describe(),
        "data_source": bundle.source, "fit_wall_seconds": time.perf_counter() - tic,
    }
    if precision_choice is not None:  # train.amp: auto on CUDA
        run_info["precision_choice"] = precision_choice.as_dict()
    if adaptation is not None:
        run_info["domain_adaptation"] = DA.describe_method(adaptation, config)
    if target is not None:
        run_info["target_source"] = target.source
    plan = read_plan(run_dir)
    if plan is not None:  # a run made by `medxfer run DATA`: the reasons go in the report
        run_info["plan"] = plan
    if random_start_warning(config, registries, strategy):  # what `medxfer run` warned of
        run_info["random_start"] = True
    with _ending_on_exception(hooks, trainer):
        summary = task.evaluate_and_report(config, run_dir, model, bundle, result, run_info,
                                           val_loader=val_loader, test_loader=test_loader,
                                           device=device, precision=precision,
                                           loss_fn=loss_fn, target=target)
        hooks.hook.medxfer_log_summary(ctx=trainer.ctx, summary=summary)
    return summary


@contextmanager
def _ending_on_exception(hooks: MedxferPluginManager, trainer: Trainer) -> Iterator[None]:
    """Call ``medxfer_on_exception`` when the final evaluation fails (loggers close)."""
    try:
        yield
    except BaseException as exc:
        hooks.hook.medxfer_on_exception(ctx=trainer.ctx, exception=exc)
        raise

