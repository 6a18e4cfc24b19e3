"""Export a finished run's model for use without medxfer.

Formats:

* ``torchscript``: ``model.ts`` (``torch.jit.load``), logits from preprocessed images;
* ``onnx``: ``model.onnx`` with dynamic batch and spatial sizes (needs
  ``pip install "medxfer[export]"``);
* ``monai-bundle``: a MONAI bundle (inference and fine-tuning configs with MONAI's standard
  properties, the weights as a state dict of a ``_target_`` network where the run's
  network is a library class, else TorchScript) that reads image files, preprocesses them
  as medxfer does, runs the network and writes masks, class probabilities or regression
  values.

Every export is checked before it is kept: the exported model must reproduce medxfer's
logits on two reproducible inputs of different sizes within
:data:`medxfer.workflows.export.common.TOLERANCES`; ``export.json`` records the measured difference.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medxfer import __version__
from medxfer.data.loading import inference_preprocess
from medxfer.data.transforms import describe_steps, imagenet_stats
from medxfer.errors import ConfigError
from medxfer.io import atomic_write_text
from medxfer.models.domain import choose_domain
from medxfer.tasks import task_of
from medxfer.workflows.export.bundle import export_bundle
from medxfer.workflows.export.common import (
    TOLERANCES,
    ExportError,
    OutputCheck,
    check_output_folder,
    size_divisor,
    staged_folder,
)
from medxfer.workflows.export.onnx_model import export_onnx, require_onnx
from medxfer.workflows.export.torchscript import export_torchscript
from medxfer.workflows.predict import load_run

EXPORT_FORMATS = ("torchscript", "onnx", "monai-bundle")

__all__ = ["EXPORT_FORMATS", "TOLERANCES", "ExportError", "ExportResult", "export_run"]


@dataclass
class ExportResult:
    """What :func:`export_run` wrote."""

    output: Path
    fmt: str
    files: list[Path]
    check: OutputCheck


#: What ``intensity: auto`` does to one image (medxfer.data.transforms.resolve_intensity).
AUTO_INTENSITY = ("per image: CT -> ct_window; 2D uint8 (8-bit files) -> uint8 (x / 255); "
                  "other 2D (16-bit or float files) -> percentile; 3D -> zscore (percentile "
                  "when imagenet_norm)")


def _preprocessing(config: Any, spatial_dims: int | None = None) -> dict[str, Any]:
    """``data.preprocess`` as new images get it and, given the model's ``spatial_dims``,
    ``steps``: how each step treats an image (interpolations, channel conversion ...), from
    :func:`medxfer.data.transforms.describe_steps`."""
    pre = inference_preprocess(config)
    described = pre.model_dump()
    if described.get("intensity") == "auto":
        described["intensity_auto"] = AUTO_INTENSITY
    if spatial_dims is not None:
        described["steps"] = describe_steps(pre, spatial_dims)
    return described


def _normalisation(channels: int, imagenet_norm: bool) -> dict[str, Any] | None:
    """The ImageNet mean and std the inputs are normalised with, per channel (``None``
    without ImageNet normalisation): RGB's three, or their grey equivalent for one channel."""
    if not imagenet_norm:
        return None
    mean, std = imagenet_stats(channels)
    return {"mean": mean, "std": std}


def _describe(loaded: Any, fmt: str, files: list[str], check: OutputCheck,
              extra: dict[str, Any]) -> dict[str, Any]:
    import torch

    sidecar, config = loaded.sidecar, loaded.config
    dims, channels = int(sidecar["spatial_dims"]), int(sidecar["in_channels"])
    norm = bool(sidecar.get("imagenet_norm", False))
    return {
        "format": fmt, "files": files, "run": str(loaded.run_dir), "task": config.task,
        "medxfer_version": __version__, "torch_version": torch.__version__,
        "input": {"name": "image", "dtype": "float32",
                  "shape": ["N", channels, *(["*"] * dims)],
                  "size_divisor": size_divisor(loaded),
                  "preprocessing": _preprocessing(config, dims),
                  "imagenet_norm": norm,
                  "normalisation": _normalisation(channels, norm)},
        # named ``logits`` in every format (the ONNX output's name), also for regression
        "output": task_of(config).describe_output(loaded),
        "decision": task_of(config).decision(loaded),
        "test_time_augmentation": {"flip_axes": [int(a) for a in sidecar.get("tta_axes") or []],
                                   "in_the_model": True} if sidecar.get("tta_axes") else None,
        "check": check.as_dict(), **extra,
    }


def export_run(run_dir: str | Path, fmt: str, output: str | Path, *,
               registries: Any | None = None, domain: str = "source") -> ExportResult:
    """Export the selected model of a finished run.

    Args:
        run_dir: Folder of a finished ``medxfer run``.
        fmt: One of :data:`EXPORT_FORMATS`.
        output: A folder that does not exist yet (or is empty).
        registries: Plugin registries (built from installed plugins when omitted).
        domain: For runs with domain-specific layers (dsbn, adabn): the domain whose
            layers the exported model uses, ``source`` or ``target`` (recorded in
            ``export.json``).

    Returns:
        The folder, format, files written and the output check.

    Raises:
        ConfigError: for an unknown format, a used output folder or a missing extra.
        CheckpointError: when ``run_dir`` is not a finished run.
        ExportError: when the model cannot be exported or does not reproduce medxfer.
    """
    if fmt not in EXPORT_FORMATS:
        close = difflib.get_close_matches(fmt, EXPORT_FORMATS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"--format {fmt!r} is not an export format; {hint}choose one of "
                          f"{', '.join(EXPORT_FORMATS)}")
    output = Path(output)
    check_output_folder(output)
    if fmt == "onnx":
        require_onnx()
    loaded = load_run(run_dir, registries=registries)
    extra: dict[str, Any] = {}
    if choose_domain(loaded.model, domain, run_dir):
        extra["domain"] = domain
    with staged_folder(output) as tmp:
        if fmt == "torchscript":
            path, check = export_torchscript(loaded, tmp)
            files = [path]
        elif fmt == "onnx":
            path, check, exporter = export_onnx(loaded, tmp)
            files = [path]
            extra["onnx_exporter"] = exporter
        else:
            files, check = export_bundle(loaded, tmp, registries=registries)
        relative = [str(f.relative_to(tmp)) for f in files]
        atomic_write_text(tmp / "export.json", json.dumps(
            _describe(loaded, fmt, relative, check, extra), indent=2) + "\n")
    return ExportResult(output, fmt, [output / r for r in relative] + [output / "export.json"],
                        check)
