"""``medxfer run`` end to end: data, model, training, evaluation, report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from medxfer.config import RunConfig, config_to_yaml, load_config, write_resolved_config
from medxfer.data.augment import default_flip_axes
from medxfer.training import distributed as D
from medxfer.training import shards
from medxfer.training.amp import channels_last_format, resolve_device, resolve_precision
from medxfer.training.checkpoints import BEST_WEIGHTS, load_model_weights
from medxfer.training.evaluate import predict
from medxfer.training.loaders import make_loader, make_loss
from medxfer.training.tensorboard import TensorBoardLogger
from medxfer.training.seeding import seed_everything
from medxfer.training.trainer import Trainer
from medxfer.workflows.results import evaluate_and_report
from medxfer.errors import ConfigError
from medxfer.models import build_network
from medxfer.plugins import Registries, build_registries, create_plugin_manager
from medxfer.plugin_kit import attributes as plugin_attributes


def resolve_run_config(config: RunConfig, run_dir: Path, resume: bool) -> RunConfig:
    """The config a run uses: on resume, the run's own saved config (which must agree)."""
    saved_path = run_dir / "config.yaml"
    if not resume:
        return config
    saved = load_config(saved_path)
    if config_to_yaml(saved) != config_to_yaml(config):
        keys = _differing_keys(saved.model_dump(mode="json"), config.model_dump(mode="json"))
        shown = ", ".join(f"{k} ({a!r} in the run, {b!r} given)" for k, a, b in keys[:5])
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        raise ConfigError(
            f"--resume: the given config differs from {str(saved_path)!r} at {shown}{more}; "
            "resume with the run's own config (give neither CONFIG nor --set) or start a new "
            "run in another --output folder")
    return saved


def _differing_keys(saved: Any, given: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """The dotted config keys whose values differ, with both values."""
    if isinstance(saved, dict) and isinstance(given, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(saved) | set(given), key=str):
            out += _differing_keys(saved.get(key), given.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == given else [(prefix.rstrip("."), saved, given)]


def resolve_tta_axes(config: RunConfig, spatial_dims: int) -> list[int]:
    """The spatial axes ``eval.tta: flip`` flips (``[]`` without test-time augmentation).

    Raises:
        ConfigError: for segmentation, or an axis that is not spatial or is repeated.
    """
    if config.eval.tta == "none":
        return []
    if config.task == "segmentation":
        raise ConfigError("eval.tta: flip is for classification and regression; set "
                          "eval.tta: none for segmentation")
    axes = config.eval.tta_axes
    axes = default_flip_axes(spatial_dims) if axes is None else list(axes)
    bad = [a for a in axes if not 0 <= a < spatial_dims]
    if bad or len(set(axes)) != len(axes) or not axes:
        raise ConfigError(f"eval.tta_axes {axes}: give distinct spatial axes of these "
                          f"{spatial_dims}D images (0..{spatial_dims - 1})")
    return axes


def wants_imagenet_norm(config: RunConfig, pretrained: Any) -> bool:
    """Whether inputs get ImageNet mean/std (``auto``: when the weights are ImageNet's, or
    come from an earlier medxfer run that used it)."""
    mode = config.data.preprocess.imagenet_norm
    if mode != "auto":
        return mode == "on"
    if isinstance(pretrained, str) and pretrained.lower() == "imagenet":
        return True
    if isinstance(pretrained, (str, Path)) and Path(pretrained).expanduser().is_dir():
        from medxfer.weights import find_run_checkpoint, run_expects_imagenet_norm

        folder = Path(pretrained).expanduser()
        return find_run_checkpoint(folder) is not None and run_expects_imagenet_norm(folder)
    return False


def backbone_weights(config: RunConfig, registries: Registries, *,
                     use_weights: bool = True) -> tuple[dict[str, Any], Any, bool]:
    """The backbone factory's options, the weights it loads (``pretrained``, the factory's
    default when the config names none) and whether inputs get ImageNet normalisation.

    ``use_weights=False`` (a strategy such as ``scratch``) builds the backbone without
    pretrained weights whatever the config asks.
    """
    spec = config.model.backbone
    kwargs = dict(spec.kwargs)
    if not use_weights:
        kwargs["pretrained"] = "none"
    pretrained = kwargs.get("pretrained",
                            _default_option(registries, spec.name, "pretrained", "none"))
    return kwargs, pretrained, wants_imagenet_norm(config, pretrained)


def _default_option(registries: Registries, name: str, option: str, fallback: Any) -> Any:
    """The default of ``option`` in the factory of backbone ``name``."""
    import inspect

    factory = registries.backbone.get(name, key="model.backbone.name").factory
    try:
        param = inspect.signature(factory).parameters.get(option)
    except (TypeError, ValueError):
        return fallback
    if param is None or param.default is inspect.Parameter.empty:
        return fallback
    return param.default


def run_pipeline(config: RunConfig, run_dir: str | Path, *,
                 registries: Registries | None = None, resume: bool = False,
                 progress: bool = True, cache_dir: Path | None = None) -> dict[str, Any]:
    """Train, select, evaluate and report one run into ``run_dir``.

    Args:
        config: The validated run config.
        run_dir: The run folder; created if needed (the CLI refuses a used one).
        registries: Plugin registries (built from installed plugins when omitted).
        resume: Continue from ``run_dir/checkpoints/last.pt``.
        progress: Show progress bars and per-epoch lines.
        cache_dir: Folder of ``data.cache: disk`` (default ``run_dir/cache``; the members
            of a deep ensemble share their run's).

    In a distributed run (inside :func:`medxfer.training.distributed.session`) every rank
    calls this and trains on its share of the data; only rank 0 writes into ``run_dir``
    (and shows progress). Every rank returns the same metrics; only rank 0's summary has
    the confidence intervals and figures.

    Returns:
        The summary also written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    registries = registries or build_registries()
    config = resolve_run_config(config, run_dir, resume)
    if config.ensemble.members > 1:
        from medxfer.workflows.deep_ensemble import run_deep_ensemble

        return run_deep_ensemble(config, run_dir, registries=registries, resume=resume,
                                 progress=progress)
    from medxfer.workflows import domain as DA

    adaptation = DA.create_method(config, registries)
    main = D.is_main()
    progress = progress and main
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

    from medxfer.data import load_data

    cache_dir = run_dir / "cache" if cache_dir is None else cache_dir
    bundle = load_data(config, imagenet_norm=imagenet_norm, cache_dir=cache_dir)
    if main:
        write_splits(run_dir / "splits.csv", bundle.cases)
    target = None
    if config.data.target is not None:
        target = DA.load_target_data(config, bundle, imagenet_norm=imagenet_norm,
                                    cache_dir=cache_dir / "target")
    model, backbone = build_task_network(config, registries, bundle, backbone_kwargs)
    tta_axes = resolve_tta_axes(config, bundle.spatial_dims)
    if tta_axes:
        model.tta_axes = tta_axes
    device = D.worker_device(config.train.device) if D.is_active() \
        else resolve_device(config.train.device)
    precision = resolve_precision(config.train.amp, device)
    model.to(device)
    model = D.sync_batchnorm(model, device, config.train.sync_batchnorm)
    if D.is_active():
        # Each rank draws its own augmentations and dropout masks; the initial weights
        # are already alike on every rank (and DDP starts from rank 0's).
        torch.manual_seed(D.rank_seed(config.train.seed))
        bundle.train.seed = D.rank_seed(config.train.seed)
        if target is not None:  # the target domain's training augmentation too
            target.train.seed = D.rank_seed(config.train.seed)
    if config.train.channels_last:
        model.to(memory_format=channels_last_format(bundle.spatial_dims))
    if config.train.compile:  # submodules: the trainer calls forward_features, not forward
        if config.task == "segmentation":
            model.net.compile()
        else:
            model.backbone.compile()
            model.head.compile()

    hooks = create_plugin_manager(load_entry_points=False)
    hooks.register(strategy, name=f"strategy:{strategy_spec.name}")
    if adaptation is not None:
        hooks.register(adaptation, name=f"domain_adaptation:{config.domain_adaptation.name}")
    if main:
        hooks.register(TensorBoardLogger(run_dir / "tensorboard"), name="medxfer:tensorboard")

    train_loader = make_loader(bundle.train, config, train=True, labels=bundle.train_labels,
                               device=device)
    val_loader = make_loader(bundle.val, config, train=False, device=device)
    test_loader = make_loader(bundle.test, config, train=False, device=device)
    loss_fn = make_loss(config, bundle.train_labels, bundle.num_classes, device)

    from medxfer.metrics import VALIDATION_METRICS, select_monitor_metric

    monitor = select_monitor_metric(config.task, config.train.early_stopping.metric,
                                    available=VALIDATION_METRICS[config.task])
    validate = make_validate(config, bundle, val_loader, device, precision, loss_fn)
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
    if adaptation is not None:
        run_info["domain_adaptation"] = DA.describe_method(adaptation, config)
    if target is not None:
        run_info["target_source"] = target.source
    from medxfer.workflows.preflight import random_start_warning

    if random_start_warning(config, registries, strategy):  # what `medxfer run` warned of
        run_info["random_start"] = True
    if config.task == "segmentation":
        from medxfer.tasks.segmentation.evaluation import evaluate_segmentation_and_report

        return evaluate_segmentation_and_report(config, run_dir, model, bundle, result, run_info,
                                                device=device, precision=precision,
                                                target=target)
    return evaluate_and_report(config, run_dir, model, bundle, result, run_info,
                               val_loader=val_loader, test_loader=test_loader, device=device,
                               precision=precision, loss_fn=loss_fn, target=target)


def write_splits(path: Path, cases: list[dict[str, Any]]) -> None:
    """Write every case's split as ``id,split`` (usable as ``data.split.file`` later)."""
    from medxfer.io import atomic_write_text

    atomic_write_text(path, splits_text(cases))


def splits_text(cases: list[dict[str, Any]]) -> str:
    """The ``splits.csv`` text of ``cases``: a header, then ``id,split`` per case."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "split"])
    for case in cases:
        writer.writerow([case["id"], case["split"]])
    return buffer.getvalue()


def build_task_network(config: RunConfig, registries: Registries, bundle: Any,
                       backbone_kwargs: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    """The network for the run's task and the backbone (or encoder view) it trains.

    Classification and regression put a core-built head on a classifier backbone;
    segmentation wraps the whole network a segmentation plugin builds.

    Raises:
        ConfigError: when the backbone does not fit the task.
    """
    from medxfer.models import (Backbone, SegmentationModel, build_segmentation_network,
                                builds_segmentation)

    spec = config.model.backbone
    entry = registries.backbone.get(spec.name, key="model.backbone.name")
    seg_plugin = builds_segmentation(entry.factory)
    if config.task == "segmentation" and not seg_plugin:
        choices = [e.name for e in registries.backbone.entries() if builds_segmentation(e.factory)]
        raise ConfigError(
            f"model.backbone.name: {spec.name!r} builds classifier features, not a segmentation "
            f"network; for task: segmentation choose one of {', '.join(choices) or '(none)'}")
    if config.task != "segmentation" and seg_plugin:
        raise ConfigError(f"model.backbone.name: {spec.name!r} builds a segmentation network; "
                          f"use it with task: segmentation")
    kwargs: dict[str, Any] = {"in_channels": bundle.in_channels,
                              "spatial_dims": bundle.spatial_dims, **backbone_kwargs}
    if seg_plugin:
        kwargs["num_classes"] = bundle.num_classes
        model = registries.backbone.create(spec.name, key="model.backbone", **kwargs)
        _require_type(model, SegmentationModel, entry)
        network = build_segmentation_network(model)
        return network, network.backbone
    backbone = registries.backbone.create(spec.name, key="model.backbone", **kwargs)
    _require_type(backbone, Backbone, entry)
    out_features = bundle.num_classes if config.task == "classification" else 1
    return build_network(backbone, out_features, dropout=config.model.head.dropout,
                         hidden=config.model.head.hidden), backbone


def _require_type(built: Any, expected: type, entry: Any) -> None:
    """Refuse what a backbone plugin's factory returned unless it is an ``expected``."""
    if not isinstance(built, expected):
        from medxfer.errors import PluginError

        raise PluginError(
            f"model.backbone.name: {entry.name!r} of plugin {entry.plugin!r} "
            f"({entry.distribution} {entry.version}) returned {type(built).__name__}, not a "
            f"medxfer.models.{expected.__name__}; its factory must return one (see "
            "docs/plugin_hooks.md)")


def make_validate(config: RunConfig, bundle: Any, val_loader: Any, device: torch.device,
                  precision: Any, loss_fn: Any) -> Any:
    """The per-epoch validation function: ``net -> {"val_loss": ..., "val_<metric>": ...}``.

    Segmentation runs whole-image (sliding-window) inference on every validation case and
    reports the loss and the mean foreground Dice.
    """
    from medxfer.metrics import classification_metrics, regression_metrics

    if config.task == "segmentation":
        from medxfer.tasks.segmentation.inference import iter_case_predictions
        from medxfer.tasks.segmentation.metrics import mean_foreground_dice

        def validate_segmentation(net: torch.nn.Module) -> dict[str, float]:
            scores = []
            for item, probs in iter_case_predictions(net, shards.shard_dataset(bundle.val), config,
                                                     device=device, precision=precision):
                label = item["label"][None]
                logits = torch.log(probs.clamp_min(1e-8))[None]
                scores.append((float(loss_fn(logits.to(device), label.to(device))),
                               mean_foreground_dice(probs[None], label, bundle.num_classes)))
            scores = shards.gather_in_order(scores)  # every rank's shard, in dataset order
            losses, dices = [s[0] for s in scores], [s[1] for s in scores]
            import numpy as np

            return {"val_loss": float(np.mean(losses)) if losses else float("nan"),
                    "val_dice": float(np.nanmean(dices)) if dices else float("nan")}

        return validate_segmentation

    def validate(net: torch.nn.Module) -> dict[str, float]:
        preds = predict(net, val_loader, device, precision, config.task, loss_fn)
        if config.task == "classification":
            values = classification_metrics(preds.targets.astype(int), preds.scores)
        else:
            values = regression_metrics(preds.targets, preds.scores)
        return {"val_loss": preds.loss, **{f"val_{k}": v for k, v in values.items() if k != "n"}}

    return validate
