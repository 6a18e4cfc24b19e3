"""What a run settles before it trains: its config on resume, the backbone's weights and
input normalisation, the test-time augmentation axes, its precision (``train.amp: auto``'s
probe), and the ``splits.csv`` it writes."""

from __future__ import annotations

import csv
import inspect
import io
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from medxfer.config import RunConfig, config_to_yaml, load_config
from medxfer.data.augment import default_flip_axes
from medxfer.errors import ConfigError
from medxfer.io import atomic_write_text
from medxfer.plugins import Registries
from medxfer.tasks import task_of
from medxfer.training import distributed as D
from medxfer.training.amp import Precision, resolve_precision
from medxfer.training.precision_probe import PrecisionChoice, choose_precision
from medxfer.training.precision_timing import (
    first_training_batch,
    preserved_random_state,
    training_step_timer,
)
from medxfer.weights import find_run_checkpoint, run_expects_imagenet_norm


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
    if not task_of(config).supports_tta:
        raise ConfigError(f"eval.tta: flip is for classification and regression; set "
                          f"eval.tta: none for {config.task}")
    axes = config.eval.tta_axes
    axes = default_flip_axes(spatial_dims) if axes is None else list(axes)
    bad = [a for a in axes if not 0 <= a < spatial_dims]
    if bad or len(set(axes)) != len(axes) or not axes:
        raise ConfigError(f"eval.tta_axes {axes}: give distinct spatial axes of these "
                          f"{spatial_dims}D images (0..{spatial_dims - 1})")
    return axes


def choose_run_precision(config: RunConfig, model: nn.Module, device: torch.device,
                         train_loader: Any, loss_fn: Callable[..., torch.Tensor], *,
                         compile_setting: bool | str) -> tuple[Precision, PrecisionChoice | None]:
    """The precision a run trains and evaluates in, and (``train.amp: auto`` on CUDA) the
    probe's choice behind it.

    ``auto`` on CUDA times a few training steps of ``model`` on a batch of
    ``train_loader`` in fp32, bf16 and fp16 (:func:`choose_precision`, cached between runs);
    in a distributed run rank 0 probes and every rank takes its choice. ``model`` must not
    be compiled or converted to SyncBatchNorm yet (the probe trains copies of it alone).
    The run's random streams are left as they were.
    """
    if config.train.amp != "auto" or device.type != "cuda":
        return resolve_precision(config.train.amp, device), None
    choice = None
    if D.is_main():
        with preserved_random_state(train_loader):
            images, labels = first_training_batch(train_loader, device)
            measure = training_step_timer(model, loss_fn, images, labels, device,
                                          channels_last=config.train.channels_last,
                                          compile_setting=compile_setting)
            choice = choose_precision(device, measure,
                                      network=probe_identity(config, images, compile_setting))
    choice = D.from_rank_zero(choice)
    return choice.precision(device), choice


def probe_identity(config: RunConfig, images: torch.Tensor,
                   compile_setting: bool | str) -> dict[str, Any]:
    """What about a run decides its training speed, beside the GPU (part of the probe's
    cache key): the network and strategy, the batch's shape (batch size, channels,
    spatial size), channels-last, compile and deterministic algorithms."""
    model = config.model.model_dump(mode="json")
    model.get("backbone", {}).pop("pretrained", None)  # the weights do not change the speed
    return {"task": config.task, "model": model, "strategy": config.strategy.name,
            "input": list(images.shape), "channels_last": config.train.channels_last,
            "compile": compile_setting, "deterministic": config.train.deterministic}


def wants_imagenet_norm(config: RunConfig, pretrained: Any) -> bool:
    """Whether inputs get ImageNet mean/std (``auto``: when the weights are ImageNet's, or
    come from an earlier medxfer run that used it)."""
    mode = config.data.preprocess.imagenet_norm
    if mode != "auto":
        return mode == "on"
    if isinstance(pretrained, str) and pretrained.lower() == "imagenet":
        return True
    if isinstance(pretrained, (str, Path)) and Path(pretrained).expanduser().is_dir():
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
    factory = registries.backbone.get(name, key="model.backbone.name").factory
    try:
        param = inspect.signature(factory).parameters.get(option)
    except (TypeError, ValueError):
        return fallback
    if param is None or param.default is inspect.Parameter.empty:
        return fallback
    return param.default


def write_splits(path: Path, cases: list[dict[str, Any]]) -> None:
    """Write every case's split as ``id,split`` (usable as ``data.split.file`` later)."""
    atomic_write_text(path, splits_text(cases))


def splits_text(cases: list[dict[str, Any]]) -> str:
    """The ``splits.csv`` text of ``cases``: a header, then ``id,split`` per case."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "split"])
    for case in cases:
        writer.writerow([case["id"], case["split"]])
    return buffer.getvalue()
