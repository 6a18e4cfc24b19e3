"""Plot a budget sweep of planned runs: the test metrics of each run against its budget.

Each run is a folder written by ``medxfer run DATA --budget B``; its ``metrics.json`` holds
the plan (the budget) and the test metrics. Runs are grouped into one line per dataset;
several runs of one budget (seeds) give their mean ± standard deviation, each run a faint
dot.

    python scripts/budget_sweep_figure.py --output docs/figures/plan_budget_sweep.png \
        BreastMNIST=runs/breast_5m,runs/breast_15m,runs/breast_45m \
        AdrenalMNIST3D=runs/adrenal_5m,runs/adrenal_15m
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def sweep_points(folders: list[Path], metric: str) -> list[tuple[float, float, float]]:
    """(budget in minutes, test metric, wall minutes of training) per run, by budget."""
    points = []
    for folder in folders:
        summary = json.loads((folder / "metrics.json").read_text())
        test = summary.get("test", summary)
        if metric not in test:
            raise SystemExit(f"{folder}/metrics.json has no test {metric!r}")
        points.append((summary["plan"]["budget_seconds"] / 60, float(test[metric]),
                       summary.get("train_seconds", 0.0) / 60))
    return sorted(points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("series", nargs="+", help="NAME=RUN_DIR,RUN_DIR,...")
    parser.add_argument("--metrics", default="accuracy,auc",
                        help="test metrics to plot, one panel each (default accuracy,auc)")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    metrics = [m for m in args.metrics.split(",") if m]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), dpi=120,
                             squeeze=False)
    ticks = sorted({p for i in args.series for p in _budgets(i)})
    for ax, metric in zip(axes[0], metrics):
        for item in args.series:
            name, _, dirs = item.partition("=")
            points = sweep_points([Path(d) for d in dirs.split(",") if d], metric)
            groups = _by_budget(points)
            budgets = sorted(groups)
            means = [float(np.mean([v for v, _ in groups[b]])) for b in budgets]
            spread = [float(np.std([v for v, _ in groups[b]])) for b in budgets]
            seeds = sorted({len(groups[b]) for b in budgets})
            line = ax.errorbar(budgets, means, yerr=spread, marker="o", capsize=3,
                               label=f"{name} ({'/'.join(map(str, seeds))} run(s) a budget)")
            for budget in budgets:  # each run, faint, beside the mean
                ax.scatter([budget] * len(groups[budget]), [v for v, _ in groups[budget]],
                           s=10, alpha=0.35, color=line[0].get_color())
            for budget, value in zip(budgets, means):
                trained = float(np.mean([t for _, t in groups[budget]]))
                ax.annotate(f"{trained:.0f} min", (budget, value), textcoords="offset points",
                            xytext=(4, -10), fontsize=7, color="0.35")
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.get_xaxis().set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("budget (minutes; grey: minutes training took)")
        ax.set_ylabel(f"test {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("medxfer run DATA --budget B (mean ± sd over seeds)",
                 fontsize=10)
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output)
    print(f"wrote {args.output}")


def _by_budget(points: list[tuple[float, float, float]]) -> dict[float, list[tuple[float, float]]]:
    """The runs' (metric, training minutes) grouped by budget."""
    groups: dict[float, list[tuple[float, float]]] = {}
    for budget, value, trained in points:
        groups.setdefault(budget, []).append((value, trained))
    return groups


def _budgets(item: str) -> list[float]:
    dirs = item.partition("=")[2].split(",")
    return [json.loads((Path(d) / "metrics.json").read_text())["plan"]["budget_seconds"] / 60
            for d in dirs if d]


if __name__ == "__main__":
    main()
