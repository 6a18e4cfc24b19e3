"""Device choice, mixed precision (CUDA fp16 with GradScaler, bf16 on CUDA or CPU) and the
channels-last memory format."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from medxfer.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; otherwise the named device.

    Raises:
        ConfigError: for a CUDA device on a machine without one.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: {name!r} is not a device; use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA GPU is available; use auto or cpu")
    return device


def channels_last_format(spatial_dims: int) -> torch.memory_format:
    """torch's channels-last memory format for ``spatial_dims``-D inputs and convolutions
    (``channels_last`` for 2D, ``channels_last_3d`` for 3D)."""
    return torch.channels_last_3d if spatial_dims == 3 else torch.channels_last


def to_channels_last(images: torch.Tensor) -> torch.Tensor:
    """A 2D or 3D batch ``[B, C, *spatial]`` in channels-last layout (others unchanged)."""
    if images.ndim not in (4, 5):
        return images
    return images.contiguous(memory_format=channels_last_format(images.ndim - 2))


@dataclass
class Precision:
    """The autocast dtype (or None for fp32) and whether a gradient scaler is needed."""

    dtype: torch.dtype | None
    device_type: str

    @property
    def needs_scaler(self) -> bool:
        """fp16 on CUDA needs loss scaling."""
        return self.dtype is torch.float16 and self.device_type == "cuda"

    def autocast(self) -> ContextManager[object]:
        """The autocast context for a forward pass."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only when it is needed."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_scaler)

    def describe(self) -> str:
        """``fp32``, ``fp16`` or ``bf16``."""
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """Map ``train.amp`` to a :class:`Precision` without timing anything.

    ``bf16`` autocasts on CUDA and CPU; ``fp16`` needs CUDA; ``auto`` is fp32 on CPU and, on
    CUDA, fp16 here: what inference outside a run (``medxfer predict``, ensembles of
    finished runs, the planner) uses. A run's training instead times the precisions
    (:func:`medxfer.workflows.run_setup.choose_run_precision`).

    Raises:
        ConfigError: for fp16 on a CPU.
    """
    kind = device.type
    if amp == "off" or (amp == "auto" and kind != "cuda"):
        return Precision(None, kind)
    if amp in ("auto", "fp16"):
        if kind != "cuda":
            raise ConfigError("train.amp: fp16 needs a CUDA device; use bf16 on CPU, or off")
        return Precision(torch.float16, kind)
    return Precision(torch.bfloat16, kind)
