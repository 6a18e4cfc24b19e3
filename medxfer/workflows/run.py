"""``medxfer run`` end to end: data, model, training, evaluation, report.

:func:`run_pipeline` settles the run's config (its own saved one on resume), then trains one
network (:mod:`medxfer.workflows.single_run`) or a deep ensemble of them
(:mod:`medxfer.workflows.deep_ensemble`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medxfer.config import RunConfig
from medxfer.plugins import Registries, build_registries
from medxfer.workflows.deep_ensemble import run_deep_ensemble
from medxfer.workflows.run_setup import resolve_run_config
from medxfer.workflows.single_run import train_single


def run_pipeline(config: RunConfig, run_dir: str | Path, *,
                 registries: Registries | None = None, resume: bool = False,
                 progress: bool = True, cache_dir: Path | None = None) -> dict[str, Any]:
    """Train, select, evaluate and report one run into ``run_dir``.

    Args:
        config: The validated run config.
        run_dir: The run folder; created if needed (the CLI refuses a used one).
        registries: Plugin registries (built from installed plugins when omitted).
        resume: Continue from ``run_dir/checkpoints/last.pt``.
        progress: Show progress bars and per-epoch lines.
        cache_dir: Folder of ``data.cache: disk`` (default ``run_dir/cache``; the members
            of a deep ensemble share their run's).

    In a distributed run (inside :func:`medxfer.training.distributed.session`) every rank
    calls this and trains on its share of the data; only rank 0 writes into ``run_dir``
    (and shows progress). Every rank returns the same metrics; only rank 0's summary has
    the confidence intervals and figures.

    Returns:
        The summary also written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    registries = registries or build_registries()
    config = resolve_run_config(config, run_dir, resume)
    if config.ensemble.members > 1:
        return run_deep_ensemble(config, run_dir, registries=registries, resume=resume,
                                 progress=progress)
    return train_single(config, run_dir, registries=registries, resume=resume,
                        progress=progress, cache_dir=cache_dir)
