"""Checks made before any training: ``medxfer run --check``, and ``medxfer compare`` for
every backbone of a grid before its first cell runs.

:func:`check_config` needs no data; :func:`check_network` reads the datalist and one image
and builds the run's network with the weights it will load. :func:`starts_from_random` asks
whether a transfer strategy would start from random weights: ``compare`` refuses such a
cell, and ``run`` warns when the strategy freezes or pulls towards them
(:func:`random_start_warning`).
"""

from __future__ import annotations

import json
from typing import Any

from medxfer.config import RunConfig
from medxfer.data.loading import network_inputs
from medxfer.errors import ConfigError, MedxferError
from medxfer.metrics import VALIDATION_METRICS, select_monitor_metric
from medxfer.plugin_kit import attributes as plugin_attributes
from medxfer.plugins import Registries, check_plugin_specs
from medxfer.tasks import task_of
from medxfer.training.amp import resolve_device, resolve_precision
from medxfer.training.shards import per_rank_batch_size
from medxfer.weights import is_no_weights
from medxfer.workflows.domain import create_method
from medxfer.workflows.run_setup import backbone_weights, resolve_tta_axes


def check_config(config: RunConfig, registries: Registries, *, machine: bool = True,
                 processes: int = 1) -> Any:
    """Check the plugins and their option values, the domain-adaptation data, the
    monitored metric, that ``train.batch_size`` splits over ``processes`` in whole cases,
    that ``train.ddp.static_graph`` fits the strategy, and (``machine``) that this machine
    has the device and precision; return the strategy object.

    Raises:
        ConfigError: naming the key: an unknown plugin or option, an option value the
            plugin refuses, a precision or device this machine lacks, domain adaptation
            without target data, an ``early_stopping.metric`` the task's validation does
            not compute, a batch that does not split, or a static graph with a strategy
            that changes which parameters train.
    """
    check_plugin_specs(config.plugin_specs(), registries)
    per_rank_batch_size(config.train.batch_size, processes,
                        samples_per_case=config.patches_per_case())
    if machine:
        resolve_precision(config.train.amp, resolve_device(config.train.device))
    strategy = registries.strategy.create(config.strategy.name, key="strategy",
                                          **config.strategy.kwargs)
    if config.train.ddp.static_graph and \
            plugin_attributes.changes_trainable_parameters(strategy):
        raise ConfigError(f"train.ddp.static_graph: strategy {config.strategy.name!r} changes "
                          "which parameters train during the run, and DDP's static graph "
                          "assumes they never change; set train.ddp.static_graph: false")
    create_method(config, registries)
    select_monitor_metric(config.task, config.train.early_stopping.metric,
                          available=VALIDATION_METRICS[config.task])
    return strategy


def starts_from_random(config: RunConfig, registries: Registries, strategy: Any) -> bool:
    """Whether ``strategy`` wants pretrained weights (its ``uses_pretrained``, true unless it
    says otherwise as ``scratch`` does) but the backbone gets none: ``pretrained: none``, or
    no ``pretrained`` and a backbone whose default is none."""
    return bool(plugin_attributes.uses_pretrained(strategy)
                and is_no_weights(backbone_weights(config, registries)[1]))


def random_start_warning(config: RunConfig, registries: Registries,
                         strategy: Any) -> str | None:
    """The warning ``medxfer run`` prints when ``strategy`` freezes or pulls towards the
    backbone's starting weights (its ``keeps_pretrained``: frozen layer groups, a retention
    loss) and those are random (:func:`starts_from_random`); else ``None``.

    A warning, not an error: a frozen random backbone is a rare but legitimate baseline.
    """
    if not (plugin_attributes.keeps_pretrained(strategy)
            and starts_from_random(config, registries, strategy)):
        return None
    return (f"strategy {config.strategy.name!r} freezes or pulls towards the backbone's "
            f"starting weights, but backbone {config.model.backbone.name!r} starts from "
            "random weights (model.backbone.pretrained: none), so this is not transfer (fine "
            "only as a deliberate random-features baseline). Set model.backbone.pretrained to "
            "imagenet or a transfer source folder (from `medxfer pretrain` or an earlier run), "
            "or use strategy full_finetune or scratch")


def check_network(config: RunConfig, registries: Registries, *, use_weights: bool = True,
                  inputs: dict[str, Any] | None = None) -> Any:
    """Build the run's network as the run will and pass it one input of the training size.

    The data's dimensions, channels, classes and input size come from the datalist and one
    preprocessed image (:func:`medxfer.data.loading.network_inputs`, which also builds the
    augmentation); the weights are the pretrained ones when ``use_weights`` (else random).
    The input is a ``meta`` tensor, so the pass costs neither memory nor time and finds the
    size rules a backbone enforces (AlexNet's 63 pixels, a U-Net's multiple of 8); a
    segmentation network also gets one ``eval.sliding_window.roi_size`` window when that is
    set.

    ``inputs`` caches what was read from the data, for configs that share it. Returns the
    :class:`medxfer.data.loading.NetworkInputs` used.

    Raises:
        DataError: when the data cannot be read.
        ConfigError, WeightsError, CheckpointError: for invalid augmentation ops, a backbone
            that does not fit the task or the input size, or weights that are missing,
            corrupt or do not fit.
    """
    kwargs, _, norm = backbone_weights(config, registries, use_weights=use_weights)
    inputs = {} if inputs is None else inputs
    key = json.dumps([config.task, config.data.model_dump(mode="json"), norm,
                      config.train.seed])
    if key not in inputs:
        inputs[key] = network_inputs(config, imagenet_norm=norm)
    shape = inputs[key]
    resolve_tta_axes(config, shape.spatial_dims)
    task = task_of(config)
    network, _ = task.build_network(config, registries, shape, kwargs)
    _meta_forward(network, shape.in_channels, shape.input_size)
    task.check_evaluation_input(config, network, shape.in_channels, shape.input_size,
                                _meta_forward)
    return shape


def _meta_forward(network: Any, channels: int, size: list[int]) -> None:
    """One forward pass on a ``meta`` tensor of shape ``[1, channels, *size]``.

    Only medxfer's own errors (the size checks of backbones) count: an operation that
    ``meta`` tensors do not support says nothing about the run, which checks it itself.
    """
    import torch

    try:
        net = network.to("meta").eval()
        with torch.no_grad():
            net(torch.empty(1, channels, *size, device="meta"))
    except MedxferError:
        raise
    except Exception:  # noqa: BLE001 - see the docstring
        return
