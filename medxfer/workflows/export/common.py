"""What every export format shares: the output folder, the network, example inputs, checks.

An export never overwrites anything: the output folder must not exist or be empty, the
files are written into a hidden temporary folder beside it and renamed into place only
when every file is written and the exported model has reproduced medxfer's outputs.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from medxfer.errors import ConfigError, MedxferError
from medxfer.io import new_temporary
from medxfer.tasks.segmentation.inference import round_up

#: ``|exported - medxfer| <= atol + rtol * |medxfer|`` on the logits, per format.
TOLERANCES: dict[str, tuple[float, float]] = {
    "torchscript": (1e-5, 1e-5),
    "onnx": (1e-4, 1e-4),
    "monai-bundle": (1e-5, 1e-5),
}


class ExportError(MedxferError):
    """The exported model could not be written or does not reproduce medxfer's outputs."""

    exit_code = 2


@dataclass
class OutputCheck:
    """How closely the exported model reproduced medxfer's logits."""

    atol: float
    rtol: float
    shapes: list[list[int]] = field(default_factory=list)
    max_abs_diff: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"atol": self.atol, "rtol": self.rtol, "input_shapes": self.shapes,
                "max_abs_diff": self.max_abs_diff,
                "rule": "|exported - medxfer| <= atol + rtol * |medxfer| on every logit"}


class LogitsModel(nn.Module):
    """The run's network as a plain ``image -> logits`` module (what is exported)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C, *spatial]`` (segmentation), ``[N, C]`` (classification).

        A regression network gives its predicted values ``[N, 1]`` instead of logits.
        """
        return self.model(image)


def size_divisor(loaded: Any) -> int:
    """The network's total downsampling (input sides must be multiples of it)."""
    return max(int(getattr(loaded.model, "size_divisor", 1)), 1)


def example_shapes(loaded: Any) -> list[list[int]]:
    """Two input shapes ``[N, C, *spatial]`` of different sizes to export and check with.

    The first is the run's sliding-window size (or training patch, or ``image_size``),
    rounded up to the network's size divisor; the second differs in every side and in the
    batch size, so that a model whose shapes were frozen while tracing is caught.
    """
    config, sidecar = loaded.config, loaded.sidecar
    dims = int(sidecar["spatial_dims"])
    channels = int(sidecar["in_channels"])
    divisor = size_divisor(loaded)
    size = (config.eval.sliding_window.roi_size or config.data.patch.size
            or config.data.preprocess.image_size or config.data.preprocess.crop_size)
    if not size or len(size) != dims:
        size = [32] * dims if dims == 3 else [64, 64]
    first = round_up(size, divisor)
    # a classifier's global pooling takes any size too: the exported model must as well,
    # since a run's own image size (28 px MedMNIST, say) need not be the first shape
    second = [s + max(divisor, 8) for s in first]
    return [[1, channels, *first], [2, channels, *second]]


def example_inputs(shapes: Sequence[Sequence[int]], seed: int = 0) -> list[torch.Tensor]:
    """Reproducible standard-normal inputs (z-scored images look like this)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) for shape in shapes]


@torch.no_grad()
def check_outputs(reference: nn.Module, exported: Callable[[torch.Tensor], Any],
                  inputs: Sequence[torch.Tensor], fmt: str) -> OutputCheck:
    """Run both models on ``inputs`` and compare the logits with the format's tolerance.

    Raises:
        ExportError: when a logit differs by more than the tolerance, or shapes differ.
    """
    atol, rtol = TOLERANCES[fmt]
    check = OutputCheck(atol, rtol)
    for x in inputs:
        expected = reference(x).float()
        got = torch.as_tensor(exported(x)).float()
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportError(f"{fmt} export: the exported model gives shape {tuple(got.shape)} "
                              f"for input {tuple(x.shape)}, medxfer gives "
                              f"{tuple(expected.shape)}; this network cannot be exported as "
                              f"{fmt}, try another --format")
        diff = (got - expected).abs()
        check.shapes.append(list(x.shape))
        check.max_abs_diff = max(check.max_abs_diff, float(diff.max()))
        if bool((diff > atol + rtol * expected.abs()).any()):
            raise ExportError(
                f"{fmt} export: the exported model differs from medxfer by up to "
                f"{float(diff.max()):.3g} on input {tuple(x.shape)} (tolerance atol={atol}, "
                f"rtol={rtol}); the network probably has shape-dependent code, try another "
                "--format")
    return check


def check_output_folder(path: Path) -> None:
    """Refuse an output folder that exists and is not empty (or is a file).

    Raises:
        ConfigError: naming the folder and what to do.
    """
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"--output {str(path)!r} exists and is not an empty folder; exports "
                          "are never overwritten: choose a new --output folder")


@contextmanager
def staged_folder(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path``, renamed to ``path`` when the block succeeds.

    Raises:
        ConfigError: when ``path`` exists and is not an empty folder.
    """
    path = Path(path)
    check_output_folder(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary(path, directory=True)
    try:
        yield tmp
        check_output_folder(path)  # nobody wrote there meanwhile
        if path.is_dir():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
