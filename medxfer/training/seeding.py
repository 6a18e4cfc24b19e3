"""Deterministic seeding of Python, NumPy, torch and MONAI."""

from __future__ import annotations

import os
import warnings

import torch
from monai.utils import set_determinism


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed every RNG a run uses; optionally ask torch for deterministic algorithms.

    Args:
        seed: The run's training seed.
        deterministic: Use deterministic algorithms where torch has them. Where an
            operation has none (e.g. CUDA's 2D/3D cross-entropy), torch's warning is shown
            once per run, not at every step.
    """
    set_determinism(seed=seed, use_deterministic_algorithms=None)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        _show_nondeterministic_once()


_NONDETERMINISTIC = "does not have a deterministic implementation"


def _show_nondeterministic_once() -> None:
    """Show each of torch's "no deterministic implementation" warnings once per process.

    torch warns at every call of such an operation (on CUDA the 3D cross-entropy of every
    training step), and a warnings filter cannot say "once": Python's once-registries are
    reset whenever any code changes the filters (as every ``catch_warnings`` does), which
    validation does each epoch. So the display function drops repeats of these texts;
    replacing ``warnings.showwarning`` is the documented way to change how warnings show.
    """
    current = warnings.showwarning
    if getattr(current, "_medxfer_once", False):
        return
    shown: set[str] = set()

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        text = str(message)
        if _NONDETERMINISTIC in text:
            if text in shown:
                return
            shown.add(text)
        current(message, category, filename, lineno, file, line)

    showwarning._medxfer_once = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning
