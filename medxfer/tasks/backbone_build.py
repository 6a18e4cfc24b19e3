"""The backbone plugin's network with the options the core applies around the factory:
``model.backbone.to_3d`` (a 2D network and its weights turned into a 3D one) and
``model.batch_renorm`` (batch renormalisation in place of batch norm).

With ``to_3d`` the factory is called for a 2D network (``spatial_dims=2``) with the
config's ``pretrained`` value, so ImageNet weights, a weights file or a 2D run load as
they always do; the result is then converted (:mod:`medxfer.models.to_3d`). A
``pretrained`` run folder that trained a 3D network (a 3D run of the same conversion, or
``medxfer pretrain --ssl`` on volumes) is loaded after the conversion instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from medxfer.config import BatchRenormConfig, RunConfig
from medxfer.errors import ConfigError
from medxfer.models import Backbone, SegmentationModel
from medxfer.models.batch_renorm import use_batch_renorm
from medxfer.models.to_3d import backbone_to_3d, segmentation_to_3d
from medxfer.plugins import Registries
from medxfer.tasks.networks import require_type
from medxfer.weights import find_run_checkpoint, is_no_weights, load_pretrained


def create_backbone(config: RunConfig, registries: Registries, entry: Any,
                    kwargs: dict[str, Any]) -> Backbone:
    """The classifier backbone ``entry``'s factory builds from ``kwargs`` (which hold
    ``in_channels``, ``spatial_dims`` and the config's options), converted to 3D and given
    batch renormalisation as the config asks.

    Raises:
        ConfigError: for ``to_3d`` on 2D data or with a backbone that builds no 2D network,
            a conversion the network does not take, or ``batch_renorm`` without batch norms.
        PluginError: when the factory returns something else than a backbone.
    """
    backbone, method, run_3d = _create_2d_first(config, registries, entry, kwargs, Backbone)
    if method is not None:
        backbone = backbone_to_3d(backbone, method, name=entry.name,
                                  check_size=_min_size(entry))
        if run_3d is not None:
            backbone.load_report, backbone.expects_imagenet_norm = load_pretrained(
                backbone.body, run_3d, backbone=entry.name, imagenet=None)
    _renormalise(config, backbone.body, backbone.layer_groups(), entry.name)
    return backbone


def create_segmentation_model(config: RunConfig, registries: Registries, entry: Any,
                              kwargs: dict[str, Any]) -> SegmentationModel:
    """The segmentation plugin's network, as :func:`create_backbone` does for classifiers
    (``to_3d`` converts the whole network; a 3D run folder seeds its encoder)."""
    model, method, run_3d = _create_2d_first(config, registries, entry, kwargs,
                                             SegmentationModel)
    if method is not None:
        model = segmentation_to_3d(model, method, name=entry.name,
                                   check_size=max(_min_size(entry), model.size_divisor))
        if run_3d is not None:
            raise ConfigError(
                f"model.backbone.pretrained: {str(run_3d)!r} trained a 3D network; with "
                "to_3d a segmentation network takes 2D weights (imagenet, a file or a 2D run)")
    encoder = {id(m) for group in model.encoder_groups for m in group.modules()}
    _renormalise(config, model.net, model.encoder_groups, entry.name, only=encoder)
    return model


def _create_2d_first(config: RunConfig, registries: Registries, entry: Any,
                     kwargs: dict[str, Any], kind: type) -> tuple[Any, str | None, Path | None]:
    """The plugin's network (of type ``kind``), built 2D when ``to_3d`` will convert it;
    with the conversion method and the 3D run folder to load after it (or ``None``)."""
    method = config.model.backbone.to_3d
    run_3d = None
    if method is not None:
        kwargs, run_3d = _kwargs_for_2d(config, entry, kwargs)
    built = registries.backbone.create(entry.name, key="model.backbone", **kwargs)
    require_type(built, kind, entry)
    return built, method, run_3d


def _kwargs_for_2d(config: RunConfig, entry: Any,
                   kwargs: dict[str, Any]) -> tuple[dict[str, Any], Path | None]:
    """The factory's options for the 2D network ``to_3d`` converts, and the 3D run folder
    to load after the conversion (its ``pretrained``, then left out), if that is one."""
    method = config.model.backbone.to_3d
    if method == "acs" and config.train.channels_last:
        raise ConfigError("model.backbone.to_3d: acs keeps the 2D kernels (4D weights), which "
                          "the channels_last_3d memory format cannot hold; set "
                          "train.channels_last: false or use to_3d: i3d")
    if kwargs.get("spatial_dims") != 3:
        raise ConfigError(f"model.backbone.to_3d: {method}: the data is "
                          f"{kwargs.get('spatial_dims')}D; to_3d turns a 2D network into a "
                          "3D one for 3D images. Remove model.backbone.to_3d")
    caps = entry.capabilities
    if caps is not None and not caps.builds(2):
        raise ConfigError(f"model.backbone.to_3d: backbone {entry.name!r} builds no 2D "
                          "network to convert; drop to_3d (it builds 3D networks itself)")
    kwargs = {**kwargs, "spatial_dims": 2}
    run_3d = three_d_run(kwargs.get("pretrained"))
    if run_3d is not None:
        _check_same_conversion(run_3d, method, entry.name)
        kwargs["pretrained"] = "none"
    return kwargs, run_3d


def three_d_run(pretrained: Any) -> Path | None:
    """``pretrained`` as a folder, when it is a medxfer run that trained a 3D network."""
    if is_no_weights(pretrained) or not isinstance(pretrained, (str, Path)):
        return None
    folder = Path(pretrained).expanduser()
    record = run_model_record(folder) if folder.is_dir() else {}
    return folder if record.get("spatial_dims") == 3 else None


def run_model_record(folder: Path) -> dict[str, Any]:
    """The JSON sidecar of a run folder's checkpoint (``model.json``), or ``{}``."""
    ckpt = find_run_checkpoint(folder)
    sidecar = ckpt.with_suffix(".json") if ckpt is not None else None
    if sidecar is None or not sidecar.is_file():
        return {}
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _check_same_conversion(folder: Path, method: str, name: str) -> None:
    backbone = run_model_record(folder).get("backbone")
    recorded = backbone.get("to_3d") if isinstance(backbone, dict) else None
    if recorded != method:
        how = f"to_3d: {recorded}" if recorded else "a native 3D network (no to_3d)"
        raise ConfigError(
            f"model.backbone.pretrained: run {str(folder)!r} trained {how}, but this run "
            f"converts {name!r} with to_3d: {method}; their weights do not correspond. Use "
            f"to_3d: {recorded or '(none)'} or another transfer source")


def _min_size(entry: Any) -> int:
    caps = entry.capabilities
    return max(1, caps.min_input_size) if caps is not None else 1


def _renormalise(config: RunConfig, net: nn.Module, groups: Any, name: str,
                 only: set[int] | None = None) -> None:
    """Batch renormalisation in the backbone (``only``: the modules of a segmentation
    network's encoder; its decoder starts from random statistics)."""
    option = config.model.batch_renorm
    if option is False:
        return
    if config.train.sync_batchnorm:
        raise ConfigError("model.batch_renorm: train.sync_batchnorm would replace the "
                          "BatchRenorm layers with plain synchronised batch norms; set one "
                          "of them to false")
    settings = option if isinstance(option, BatchRenormConfig) else BatchRenormConfig()
    if not use_batch_renorm(net, groups, r_max=settings.r_max, d_max=settings.d_max,
                            only=only):
        raise ConfigError(f"model.batch_renorm: backbone {name!r} has no batch norm layers "
                          "to renormalise; remove model.batch_renorm")
