"""TorchScript export: ``model.ts``, loadable with ``torch.jit.load`` and no medxfer."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from medxfer.workflows.export.common import (ExportError, LogitsModel, OutputCheck, check_outputs,
                                   example_inputs, example_shapes)

FILE_NAME = "model.ts"


def trace_model(loaded: Any) -> tuple[torch.jit.ScriptModule, list[torch.Tensor]]:
    """Trace the run's network on an example input.

    Returns:
        The traced module and the example inputs (the first was traced, all are checked).

    Raises:
        ExportError: when tracing fails.
    """
    model = LogitsModel(loaded.model).eval()
    inputs = example_inputs(example_shapes(loaded))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings of input-size guards
            traced = torch.jit.trace(model, inputs[0], check_trace=False)
    except Exception as exc:  # torch raises many types from deep inside
        raise ExportError(f"torchscript export: tracing the network of "
                          f"{str(loaded.run_dir)!r} failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return traced, inputs


def export_torchscript(loaded: Any, folder: Path, *, fmt: str = "torchscript"
                       ) -> tuple[Path, OutputCheck]:
    """Write ``folder/model.ts`` and check that the saved file reproduces the logits.

    Args:
        loaded: A run from :func:`medxfer.workflows.predict.load_run`.
        folder: Where to write (exists).
        fmt: The format named in the check (``torchscript`` or ``monai-bundle``).

    Returns:
        The file written and the output check.

    Raises:
        ExportError: when tracing fails or the saved model differs beyond the tolerance.
    """
    traced, inputs = trace_model(loaded)
    path = Path(folder) / FILE_NAME
    traced.save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still works
        reloaded = torch.jit.load(str(path), map_location="cpu").eval()
    check = check_outputs(LogitsModel(loaded.model).eval(), reloaded, inputs, fmt)
    return path, check
