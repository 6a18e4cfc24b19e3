"""``medxfer plan DATA`` and ``medxfer run DATA``: plan a run from a dataset, and run it.

``plan_dataset`` writes ``plan.yaml`` (the commented config). ``run_dataset`` plans inside
the budget and trains the plan in a run folder that keeps ``plan.yaml`` and ``plan.json``
(the reasons, fingerprint, probe and estimates); the run's ``metrics.json`` and report carry
the plan's reasons and its estimate beside the time the run really took.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from medxfer.config import apply_overrides, validate_config
from medxfer.errors import ConfigError
from medxfer.io import atomic_write_text
from medxfer.planning import Plan, make_plan
from medxfer.planning.plan import PLAN_JSON, PLAN_YAML
from medxfer.plugins import Registries, build_registries
from medxfer.workflows.preflight import check_config, random_start_warning
from medxfer.workflows.run_folder import FolderRun, train_in_folder



def plan_dataset(path: str | os.PathLike[str], *, budget: float, output: Path | None = None,
                 device: str = "auto", registries: Registries | None = None,
                 format: str = "auto") -> Plan:
    """Plan a run on ``path`` within ``budget`` seconds; write ``output`` (``plan.yaml``)
    when given.

    Raises:
        ConfigError: when ``output`` exists (plans are never overwritten), or for a bad
            budget or device.
        DataError: when the data cannot be planned for.
    """
    if output is not None and Path(output).exists():
        raise ConfigError(f"--output {str(output)!r} exists; plans are never overwritten "
                          "(give another file name)")
    plan = make_plan(path, budget=budget, device=device, registries=registries, format=format)
    if output is not None:
        atomic_write_text(Path(output), plan.to_yaml())
    return plan


def run_dataset(path: str | os.PathLike[str], *, budget: float, output: Path | None = None,
                device: str = "auto", registries: Registries | None = None,
                format: str = "auto", overrides: Sequence[str] = (),
                search: int = 0) -> FolderRun:
    """Plan a run on ``path`` and train it, all within ``budget`` seconds.

    ``overrides`` (``--set key=value``) apply on top of the plan, and are said in the
    plan's reasons. ``search`` (``--search N``, at least 2) first compares up to N
    candidate plans on validation (:func:`medxfer.workflows.plan_search.search_plan`)
    inside the same budget, and runs the winner.

    Returns:
        What :func:`medxfer.workflows.run_folder.train_in_folder` returns.
    """
    tic = time.perf_counter()
    registries = registries or build_registries()
    plan = make_plan(path, budget=budget, device=device, registries=registries,
                     format=format, spent=0.0)
    raw = plan.config
    if overrides:
        raw = apply_overrides(json.loads(json.dumps(plan.config)), list(overrides))
        for text in overrides:
            plan.reasons[text.split("=", 1)[0].strip()] = f"set by --set {text}"
        plan.config = raw
    config = validate_config(raw, source="the plan", overrides=list(overrides))
    strategy = check_config(config, registries)
    if search:
        from medxfer.locking import locked_folder
        from medxfer.workflows.plan_search import search_plan, search_workdir
        from medxfer.workflows.run_folder import check_output_dir, default_output_dir

        output = Path(output) if output is not None else default_output_dir()
        with locked_folder(output):  # a used folder is refused now, not after the search
            check_output_dir(output, False)
        search_plan(plan, search, registries=registries,
                    workdir=search_workdir(output),
                    fixed=[text.split("=", 1)[0].strip() for text in overrides])
        config = validate_config(plan.config, source="the plan", overrides=list(overrides))
        strategy = check_config(config, registries)
    plan.summary["planning_seconds"] = round(time.perf_counter() - tic, 1)
    files = {PLAN_YAML: plan.to_yaml(), PLAN_JSON: json.dumps(plan.record(), indent=2)}
    return train_in_folder(config, output, registries=registries, resume=False,
                           random_start=random_start_warning(config, registries, strategy),
                           files=files)
