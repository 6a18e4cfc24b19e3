"""Deterministic seeding of Python, NumPy, torch and MONAI."""

from __future__ import annotations

import os

import torch
from monai.utils import set_determinism


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed every RNG a run uses; optionally ask torch for deterministic algorithms.

    Args:
        seed: The run's training seed.
        deterministic: Use deterministic algorithms where torch has them (warn elsewhere).
    """
    set_determinism(seed=seed, use_deterministic_algorithms=None)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
