"""The parts of a run's summary (``metrics.json``) that every task writes alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medxfer.config import RunConfig
from medxfer.training.trainer import FitResult


def clean(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe values: numpy numbers as Python ones, NaN as ``None``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, (float, np.floating)):
            out[key] = None if np.isnan(value) else float(value)
        elif isinstance(value, (np.integer,)):
            out[key] = int(value)
        else:
            out[key] = value
    return out


def run_summary_fields(config: RunConfig, run_dir: Path, bundle: Any, result: FitResult,
                       ci: dict[str, tuple[float, float]], figures_dir: Path) -> dict[str, Any]:
    """The ``metrics.json`` fields every task shares: CIs, training facts, figures, splits."""
    return dict(
        ci95={k: [None if np.isnan(lo) else float(lo), None if np.isnan(hi) else float(hi)]
              for k, (lo, hi) in ci.items()},
        train_seconds=result.train_seconds, best_epoch=result.best_epoch,
        monitor=result.monitor, select=config.train.early_stopping.select,
        stopped_early=result.stopped_early, epochs_run=len(result.history),
        loss={"alpha": config.loss.alpha, "beta": config.loss.beta},
        figures=sorted(str(p.relative_to(run_dir)) for p in figures_dir.glob("*.png")),
        history=[clean(h) for h in result.history], config_path="config.yaml",
        splits=case_counts(bundle),
        **result.extra,  # e.g. time_limit: the epochs train.time_limit left
    )


def case_counts(bundle: Any) -> dict[str, int]:
    """Cases (images or volumes) per split, as ``splits.csv`` lists them; a 2D network
    trained on the slices of volumes (``data.slice_axis``) has more training items."""
    cases = getattr(bundle, "cases", None) or []
    if not cases:
        return {s: len(getattr(bundle, s)) for s in ("train", "val", "test")}
    return {s: sum(1 for c in cases if c["split"] == s) for s in ("train", "val", "test")}
