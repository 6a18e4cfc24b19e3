"""What a run settles before it trains: its config on resume, the backbone's weights and
input normalisation, the test-time augmentation axes, and the ``splits.csv`` it writes."""

from __future__ import annotations

import csv
import inspect
import io
from pathlib import Path
from typing import Any

from medxfer.config import RunConfig, config_to_yaml, load_config
from medxfer.data.augment import default_flip_axes
from medxfer.errors import ConfigError
from medxfer.io import atomic_write_text
from medxfer.plugins import Registries
from medxfer.tasks import task_of
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
