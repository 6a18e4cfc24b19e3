"""``medxfer pretrain``: train a backbone on a labelled source dataset and keep it as a
transfer source for later runs.

A pretraining run is an ordinary run (same config, training, evaluation and report on the
source dataset's own test split) that also writes ``transfer_source.json``: which backbone
and options it trained, on which data, the input channels and dimensions, whether inputs
were ImageNet-normalised, the source test metrics, and the SHA-256 of the checkpoint. A
later run names the folder as ``model.backbone.pretrained: DIR``; the core then checks the
recorded hash and the backbone name before any tensor is loaded
(:func:`medxfer.weights.check_transfer_source`). This lets backbones with no ImageNet
weights offline (LeNet, the baseline CNN, AlexNet here) be compared under transfer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medxfer.config import RunConfig
from medxfer.errors import ConfigError
from medxfer.io import atomic_write_json
from medxfer.plugin_kit import attributes as plugin_attributes
from medxfer.plugins import Registries, build_registries
from medxfer.weights import TRANSFER_SOURCE_JSON, find_run_checkpoint, sha256_of
from medxfer.workflows.run import run_pipeline
from medxfer.workflows.run_folder import check_output_dir, cleared_if_nothing_to_resume


def pretrain(config: RunConfig, run_dir: str | Path, *, registries: Registries | None = None,
             resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` and record the run as a transfer source.

    Args:
        config: A classification, regression or segmentation config on the source data.
        run_dir: The run folder (the CLI refuses a used one unless resuming).
        registries: Plugin registries (built from installed plugins when omitted).
        resume: Continue a killed pretraining run from its last checkpoint.
        progress: Show progress bars.

    Returns:
        The ``transfer_source.json`` record.

    Raises:
        ConfigError: for a strategy that freezes the backbone (nothing would be learnt).
    """
    registries = registries or build_registries()
    strategy = registries.strategy.create(config.strategy.name, key="strategy",
                                          **config.strategy.kwargs)
    if plugin_attributes.freezes_backbone(strategy):
        raise ConfigError(
            f"strategy: {config.strategy.name!r} keeps the backbone frozen, so pretraining "
            "would learn nothing to transfer; use full_finetune or scratch")
    run_dir = Path(run_dir)
    summary = run_pipeline(config, run_dir, registries=registries, resume=resume,
                           progress=progress)
    return write_transfer_source(config, run_dir, summary)


def pretrain_in_folder(config: RunConfig, output: Path, *, registries: Registries,
                       resume: bool = False) -> dict[str, Any]:
    """:func:`pretrain` into a new folder (or a killed run's, ``resume``), leaving nothing
    behind when it fails before its first checkpoint; returns the record.

    Raises:
        ConfigError: when ``output`` holds files and ``resume`` is false.
    """
    resume = check_output_dir(output, resume)
    with cleared_if_nothing_to_resume(output, resume):
        return pretrain(config, output, registries=registries, resume=resume)


def write_transfer_source(config: RunConfig, run_dir: Path,
                          summary: dict[str, Any]) -> dict[str, Any]:
    """Write ``run_dir/transfer_source.json`` for a finished run and return it."""
    record = transfer_source_record(config, run_dir, summary)
    atomic_write_json(run_dir / TRANSFER_SOURCE_JSON, record)
    return record


def transfer_source_record(config: RunConfig, run_dir: Path,
                           summary: dict[str, Any]) -> dict[str, Any]:
    """The ``transfer_source.json`` record of a finished run in ``run_dir``: what it
    trained on which data, and the SHA-256 of its checkpoint.

    Raises:
        ConfigError: when the folder holds no checkpoint.
    """
    ckpt = find_run_checkpoint(run_dir)
    if ckpt is None:  # run_pipeline always writes one; a clear error if that ever breaks
        raise ConfigError(f"{run_dir}: the pretraining run wrote no checkpoint")
    return {
        "backbone": config.model.backbone.model_dump(mode="json"),
        "task": config.task,
        "data": config.data.path,
        "class_names": summary.get("class_names"),
        "strategy": summary.get("strategy"),
        "pretrained": summary.get("pretrained"),
        "source_test": summary.get("test"),
        "checkpoint": ckpt.relative_to(run_dir).as_posix(),
        "sha256": sha256_of(ckpt),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
