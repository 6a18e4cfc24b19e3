"""Learning-rate schedules as a factor of each group's initial learning rate.

torch's schedulers fix the number of parameter groups when they are built; a strategy
that unfreezes layers adds groups mid-run, so the factor is applied to every group's
``initial_lr`` at each step instead.
"""

from __future__ import annotations

import math

import torch


def lr_factor(name: str, step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of the initial learning rate at ``step``.

    Args:
        name: ``cosine`` (linear warm-up, then cosine to zero), ``onecycle`` (cosine up
            over the first 30% from 1/25, then cosine down to 1/1e4), or ``constant``.
        step: Zero-based step.
        total_steps: Steps in the whole run.
        warmup_steps: Warm-up steps for ``cosine``.
    """
    total_steps = max(total_steps, 1)
    if name == "constant":
        return 1.0
    if name == "onecycle":
        up = max(int(0.3 * total_steps), 1)
        if step < up:
            return _cos_interp(1 / 25, 1.0, step / up)
        return _cos_interp(1.0, 1e-4, (step - up) / max(total_steps - up, 1))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _cos_interp(start: float, end: float, t: float) -> float:
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def apply_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's ``lr`` to ``initial_lr * factor`` (recording ``initial_lr`` once)."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
