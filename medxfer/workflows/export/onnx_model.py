"""ONNX export: ``model.onnx`` with dynamic batch and spatial sizes, checked with ONNX Runtime.

Needs the optional packages ``onnx``, ``onnxscript`` and ``onnxruntime``
(``pip install "medxfer[export]"``). The model is exported with PyTorch's
``torch.export``-based exporter; when that fails, with its older TorchScript-based one.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any

import torch

from medxfer.errors import ConfigError
from medxfer.tasks import task_of
from medxfer.workflows.export.common import (ExportError, LogitsModel, OutputCheck, check_outputs,
                                   example_inputs, example_shapes)

FILE_NAME = "model.onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def require_onnx() -> Any:
    """Import ``onnxruntime`` (and check ``onnx``) or say how to install them.

    Raises:
        ConfigError: when the ``export`` extra is missing.
    """
    try:
        import importlib

        importlib.import_module("onnx")
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(f"--format onnx needs the optional package {exc.name!r}: "
                          'pip install "medxfer[export]"') from None
    return onnxruntime


def _export(model: torch.nn.Module, example: torch.Tensor, path: Path, dims: int,
            segmentation: bool) -> str:
    """Write the ONNX file (batch and every spatial side of the input dynamic; a
    segmentation output's sides follow the input's); returns which exporter succeeded."""
    from torch.export import Dim

    axes = {0: "batch", **{2 + i: f"side{i}" for i in range(dims)}}
    out_axes = axes if segmentation else {0: "batch"}
    shapes = {"image": {axis: Dim.AUTO for axis in axes}}
    errors = []
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamo=True, dynamic_shapes=shapes,
                              external_data=False, verbose=False)
            return "torch.export"
        except Exception as exc:  # noqa: BLE001 - fall back to the other exporter
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        try:
            torch.onnx.export(model, (example,), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], dynamo=False,
                              dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: out_axes})
            return "torchscript"
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise ExportError("onnx export failed with both of PyTorch's exporters ("
                      + "; ".join(errors) + "); try --format torchscript")


def export_onnx(loaded: Any, folder: Path) -> tuple[Path, OutputCheck, str]:
    """Write ``folder/model.onnx`` and check it with ONNX Runtime on two input sizes.

    Returns:
        The file written, the output check and the exporter used.

    Raises:
        ConfigError: when the ``export`` extra is not installed.
        ExportError: when exporting fails or the outputs differ beyond the tolerance.
    """
    ort = require_onnx()
    model = LogitsModel(loaded.model).eval()
    inputs = example_inputs(example_shapes(loaded))
    path = Path(folder) / FILE_NAME
    exporter = _export(model, inputs[0], path, int(loaded.sidecar["spatial_dims"]),
                       task_of(loaded.config).labels_are_masks)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])

    check = check_outputs(model, run, inputs, "onnx")
    return path, check, exporter
