"""``train.compile``: ``torch.compile`` of the network, and the step marks its CUDA-graph
mode needs.

``cudagraphs`` compiles with ``mode="reduce-overhead"``: each step's kernels are recorded
once and then replayed in one launch, which pays off when a step is many small kernels
(small batches of 3D networks). Graph replays reuse their output memory, so every training
step and every evaluation forward starts with
:func:`torch.compiler.cudagraph_mark_step_begin` (:func:`begin_step`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medxfer.errors import notify

CUDAGRAPHS = "cudagraphs"
#: The attribute that marks a network compiled into CUDA graphs (see :func:`begin_step`).
_GRAPHED = "_medxfer_cudagraph_steps"


def torch_compile_mode(setting: bool | str) -> str | None:
    """The ``mode`` of ``torch.compile`` for a ``train.compile`` setting (None: torch's
    default mode; only meaningful when the setting compiles at all)."""
    return "reduce-overhead" if setting == CUDAGRAPHS else None


def run_compile_setting(setting: bool | str, device: torch.device) -> bool | str:
    """The ``train.compile`` a run on ``device`` uses: ``cudagraphs`` needs CUDA, so a run
    that landed on the CPU (``train.device: auto`` without a GPU) trains without compiling,
    and says so. (An explicit ``train.device: cpu`` is refused by the config.)"""
    if setting == CUDAGRAPHS and device.type != "cuda":
        notify(f"train.compile: cudagraphs needs a CUDA GPU, but this run trains on {device} "
               "(train.device: auto found none); it trains without compiling. Set "
               "train.compile: true (or false) for CPU runs")
        return False
    return setting


def compile_network(model: nn.Module, setting: bool | str) -> None:
    """``torch.compile`` ``model``'s submodules in place as ``setting`` asks (its
    ``compile_submodules``); nothing for ``False``."""
    if not setting:
        return
    model.compile_submodules(mode=torch_compile_mode(setting))
    if setting == CUDAGRAPHS:
        mark_cudagraph_steps(model)


def mark_cudagraph_steps(model: nn.Module) -> None:
    """Let :func:`begin_step` start a new CUDA-graph step before each use of ``model``."""
    setattr(model, _GRAPHED, True)


def begin_step(model: Any) -> None:
    """Before a training step or an evaluation forward of ``model``: when it runs as CUDA
    graphs, tell them that a new step begins (the outputs of the previous one may then be
    overwritten), else nothing."""
    if getattr(model, _GRAPHED, False):
        torch.compiler.cudagraph_mark_step_begin()
