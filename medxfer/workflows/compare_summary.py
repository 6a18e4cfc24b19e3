"""Aggregate a finished ``medxfer compare`` grid: mean ± std and 95% CI over seeds, an
ensemble row, and ``comparison.{md,csv,json}`` with figures.

Each (backbone, strategy) row summarises its seeds' test metrics: the mean, the sample
standard deviation and a Student-t 95% confidence interval of the mean over seeds (the
between-seed variation; each run's own bootstrap CI over test cases stays in its
``metrics.json``). The ensemble row combines, for every backbone, all seeds of its best
strategy by mean validation score, with a combiner plugin (:mod:`medxfer.workflows.ensemble`);
it is one evaluation, so its row has no std or CI.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import stats

from medxfer.errors import CheckpointError
from medxfer.io import atomic_write_text
from medxfer.metric_table import bounds as metric_bounds
from medxfer.metric_table import lower_is_better
from medxfer.plugins import Registries
from medxfer.report.compare_figures import plot_comparison_figures
from medxfer.report.compare_markdown import render_comparison_markdown
from medxfer.report.tables import write_metrics_json
from medxfer.tasks import get_task
from medxfer.workflows.compare import Cell, Grid
from medxfer.workflows.ensemble import ENSEMBLE_JSON, run_ensemble

COMPARISON_MD = "comparison.md"
COMPARISON_CSV = "comparison.csv"
COMPARISON_JSON = "comparison.json"
ENSEMBLE_DIR = "ensemble"
FIGURES_DIR = "figures"
#: Metrics that are counts or bookkeeping, not results.
SKIPPED_METRICS = {"n", "loss"}


def mean_std_ci(values: Sequence[float], bounds: tuple[float, float] | None = None
                ) -> dict[str, Any]:
    """Mean, sample std and the Student-t 95% CI of the mean of ``values`` (NaNs dropped).

    One value gives a std and CI of ``None``; no values give ``None`` everywhere. With
    ``bounds``, the interval is clipped to the range the metric can take.
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(finite)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = float(np.mean(finite))
    if n == 1:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = float(np.std(finite, ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "std": std, "ci95": [low, high], "n": n}


def read_cell(run_dir: Path) -> dict[str, Any]:
    """A finished cell's ``metrics.json``.

    Raises:
        CheckpointError: when it is missing or unreadable.
    """
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read this cell's results ({exc}); delete the "
                              "cell folder and run `medxfer compare` again to redo it") from None


def aggregate(grid: Grid, results: Sequence[tuple[Cell, Path]]) -> dict[str, Any]:
    """One row per (backbone, strategy) with per-metric mean/std/CI over seeds."""
    cells = [(cell, folder, read_cell(folder)) for cell, folder in results]
    rows = []
    for backbone in grid.backbones:
        for strategy in grid.strategies:
            mine = [(c, f, m) for c, f, m in cells
                    if c.backbone == backbone and c.strategy == strategy]
            tests = [m.get("test") or {} for _, _, m in mine]
            names = _metric_names(tests)
            monitor = (mine[0][2].get("monitor") or "") if mine else ""
            rows.append({
                "model": f"{backbone} / {_strategy_run(mine, strategy)}", "backbone": backbone,
                "strategy": strategy,
                "seeds": [c.seed for c, _, _ in mine],
                "runs": [str(f) for _, f, _ in mine],
                "metrics": {k: {**mean_std_ci([t.get(k) for t in tests], metric_bounds(k)),
                                "values": [t.get(k) for t in tests]} for k in names},
                "val_monitor": {"name": monitor, **mean_std_ci(
                    [_monitor_value(m, monitor) for _, _, m in mine])},
                "train_seconds": mean_std_ci([m.get("train_seconds") for _, _, m in mine]),
                "confusion_matrix": _summed_confusion(m for _, _, m in mine),
            })
    first = cells[0][2] if cells else {}
    return {"task": first.get("task"), "class_names": first.get("class_names"),
            "backbones": grid.backbones, "strategies": grid.strategies, "seeds": grid.seeds,
            "pretrain": ({b: str(grid.pretrain_dir(b)) for b in grid.backbones}
                         if grid.pretrain_config is not None else None),
            "rows": rows}


def _strategy_run(cells: Sequence[tuple[Cell, Path, dict[str, Any]]], column: str) -> str:
    """The strategy a row's runs used: the grid's column, unless an arm's ``--backbone-set``
    gave its cells another (e.g. the ``scratch`` arm of a transfer-source study)."""
    names = {(m.get("strategy") or {}).get("name") for _, _, m in cells
             if isinstance(m.get("strategy"), dict)}
    return names.pop() if len(names) == 1 and None not in names else column


def _metric_names(tests: Sequence[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for test in tests:
        for key, value in test.items():
            if key in SKIPPED_METRICS or key in names or isinstance(value, (dict, list)):
                continue
            names.append(key)
    return names


def _monitor_value(metrics: dict[str, Any], monitor: str) -> float | None:
    name = monitor[4:] if monitor.startswith("val_") else monitor
    value = (metrics.get("val") or {}).get(name)
    return float(value) if isinstance(value, (int, float)) else None


def _summed_confusion(metrics_list: Any) -> list[list[int]] | None:
    total = None
    for metrics in metrics_list:
        cm = metrics.get("confusion_matrix")
        if not cm:
            continue
        array = np.asarray(cm, dtype=np.int64)
        total = array if total is None else total + array
    return None if total is None else total.tolist()


def ensemble_members(summary: dict[str, Any]) -> list[Path]:
    """All seeds of each backbone's best strategy by mean validation score."""
    members: list[Path] = []
    for backbone in summary["backbones"]:
        rows = [r for r in summary["rows"] if r["backbone"] == backbone
                and r["val_monitor"]["mean"] is not None]
        if not rows:
            continue
        lower = lower_is_better(rows[0]["val_monitor"]["name"].removeprefix("val_"))
        best = (min if lower else max)(rows, key=lambda r: r["val_monitor"]["mean"])
        members += [Path(run) for run in best["runs"]]
    return members


def add_ensemble_row(summary: dict[str, Any], output: Path, combiner: str,
                     registries: Registries, device: str = "auto") -> None:
    """Run (or reuse) the grid's ensemble into ``output/ensemble`` and add it as a row.

    Skipped (with ``summary["ensemble"]["skipped"]`` saying why) when there are fewer than
    two members or the task has no ensembles.
    """
    members = ensemble_members(summary)
    folder = output / ENSEMBLE_DIR
    combinable = get_task(summary["task"]).supports_run_ensembles
    if not combinable or len(members) < 2:
        why = (f"{summary['task']} runs have no ensembles" if not combinable
               else "fewer than two members")
        summary["ensemble"] = {"skipped": why}
        return
    record = folder / ENSEMBLE_JSON
    result = None
    if record.is_file():
        result = json.loads(record.read_text(encoding="utf-8"))
        same = [Path(r).resolve() for r in result.get("runs", [])] == \
            [m.resolve() for m in members] and (result.get("combiner") or {}).get("name") == combiner
        if not same:  # the grid's best strategies or the combiner changed: redo it
            shutil.rmtree(folder)
            result = None
    if result is None:
        if folder.exists():
            shutil.rmtree(folder)
        result = run_ensemble(members, combiner, folder, registries=registries, device=device)
    test = result["ensemble"].get("test") or {}
    summary["ensemble"] = {"combiner": combiner, "members": [str(m) for m in members],
                           "folder": str(folder)}
    summary["rows"].append({
        "model": f"ensemble ({combiner}, {len(members)} runs)", "backbone": "ensemble",
        "strategy": combiner, "seeds": [], "runs": [str(m) for m in members],
        "metrics": {k: {"mean": v, "std": None,
                        "ci95": None, "n": 1,
                        "values": [v]}
                    for k, v in test.items() if k not in SKIPPED_METRICS
                    and isinstance(v, (int, float))},
        "val_monitor": {"name": "", "mean": None, "std": None, "ci95": None, "n": 0},
        "train_seconds": {"mean": None, "std": None, "ci95": None, "n": 0},
        "confusion_matrix": result["ensemble"].get("confusion_matrix"),
        "best_member": _best_member(result),
    })


def _best_member(result: dict[str, Any]) -> dict[str, Any] | None:
    scored = [(m.get("test") or {}).get("auc") for m in result.get("members", [])]
    if not scored or any(s is None for s in scored):
        return None
    best = result["members"][int(np.argmax(scored))]
    return {"label": best.get("label"), "test": best.get("test")}


def write_comparison(summary: dict[str, Any], output: Path) -> list[Path]:
    """Write ``comparison.json``, ``comparison.csv``, ``comparison.md`` and the figures."""
    figures = plot_comparison_figures(summary, output / FIGURES_DIR)
    summary["figures"] = [str(p.relative_to(output)) for p in figures]
    write_metrics_json(output / COMPARISON_JSON, summary)
    atomic_write_text(output / COMPARISON_CSV, comparison_csv(summary))
    atomic_write_text(output / COMPARISON_MD, render_comparison_markdown(summary))
    return [output / COMPARISON_JSON, output / COMPARISON_CSV, output / COMPARISON_MD, *figures]


def comparison_csv(summary: dict[str, Any]) -> str:
    """One row per model: for every metric its mean, std and CI bounds."""
    names: list[str] = []
    for row in summary["rows"]:
        names += [k for k in row["metrics"] if k not in names]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    header = ["model", "backbone", "strategy", "n_runs"]
    for name in names:
        header += [f"{name}_mean", f"{name}_std", f"{name}_ci_low", f"{name}_ci_high"]
    writer.writerow(header)
    for row in summary["rows"]:
        line = [row["model"], row["backbone"], row["strategy"], len(row["runs"])]
        for name in names:
            stat = row["metrics"].get(name) or {}
            ci = stat.get("ci95") or [None, None]
            line += [_num(stat.get("mean")), _num(stat.get("std")), _num(ci[0]), _num(ci[1])]
        writer.writerow(line)
    return buffer.getvalue()


def _num(value: Any) -> str:
    return "" if value is None or not math.isfinite(float(value)) else f"{float(value):.6g}"
