"""``comparison.md``: the comparison table (mean ± std [95% CI] over seeds), the ensemble
row, every run, and the figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medxfer.metric_table import metrics_for
from medxfer.report.tables import format_value, markdown_table, ordered_metrics


def table_columns(summary: dict[str, Any]) -> list[str]:
    """The metrics of the comparison table: the metric table's ``comparison`` columns of the
    grid's task (classification when unknown) that some row has, in that order."""
    present = {name for row in summary["rows"] for name in row["metrics"]}
    return [name for name in metrics_for(summary.get("task") or "classification",
                                         shown_in="comparison") if name in present]


def format_stat(stat: dict[str, Any] | None, digits: int = 3) -> str:
    """``0.912 ± 0.010 [0.887, 0.937]``; parts that are undefined are left out."""
    if not stat or stat.get("mean") is None:
        return "n/a"
    text = format_value(stat["mean"], digits)
    if stat.get("std") is not None:
        text += f" ± {stat['std']:.{digits}f}"
    ci = stat.get("ci95")
    if ci and None not in ci:
        text += f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
    return text


def render_comparison_markdown(summary: dict[str, Any]) -> str:
    """The whole ``comparison.md``."""
    task = summary.get("task") or "classification"
    rows = summary["rows"]
    present = ordered_metrics(*(r["metrics"] for r in rows))
    columns = table_columns(summary)
    n_seeds = len(summary["seeds"])
    lines = [f"# Comparison: {len(summary['backbones'])} backbones x "
             f"{len(summary['strategies'])} strategies x {n_seeds} seeds ({task})", "",
             f"Test split. Each cell: mean ± std over seeds {summary['seeds']} and the Student-t "
             "95% CI of that mean. Each run's own bootstrap CI over test cases is in its "
             "`metrics.json`.", ""]
    if summary.get("pretrain"):
        lines += ["Transfer strategies start from backbones pretrained by `medxfer pretrain` on "
                  "the source dataset of `--pretrain`: "
                  + ", ".join(f"{b}: `{p}`" for b, p in summary["pretrain"].items())
                  + "; `scratch` starts from random weights.", ""]
    header = ["model", "runs", *columns, "train s"]
    table = [[r["model"], len(r["runs"]), *(format_stat(r["metrics"].get(m)) for m in columns),
              format_value((r.get("train_seconds") or {}).get("mean"), 0)] for r in rows]
    lines += [markdown_table(header, table), ""]
    lines += _ensemble_section(summary)
    others = [m for m in present if m not in columns]
    if others:
        lines += ["## Other metrics", "",
                  markdown_table(["model", *others],
                                 [[r["model"], *(format_stat(r["metrics"].get(m)) for m in others)]
                                  for r in rows]), ""]
    lines += ["## Every run", "", _runs_table(rows, columns[:3]), ""]
    if summary.get("figures"):
        lines += ["## Figures", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in summary["figures"]]
        lines.append("")
    return "\n".join(lines)


def _ensemble_section(summary: dict[str, Any]) -> list[str]:
    info = summary.get("ensemble") or {}
    if not info:
        return []
    if info.get("skipped"):
        return [f"No ensemble row: {info['skipped']}.", ""]
    row = next((r for r in summary["rows"] if r["backbone"] == "ensemble"), None)
    lines = ["## Ensemble", "",
             f"The ensemble row combines, for every backbone, all seeds of its best strategy by "
             f"mean validation score ({len(info['members'])} runs, combiner "
             f"`{info['combiner']}` fitted on validation outputs only); details in "
             f"`{Path(info['folder']).name}/ensemble.md`.", ""]
    best = (row or {}).get("best_member")
    if row and best:
        ens_auc = (row["metrics"].get("auc") or {}).get("mean")
        ens_ece = (row["metrics"].get("ece") or {}).get("mean")
        mem_auc, mem_ece = best["test"].get("auc"), best["test"].get("ece")
        lines += [markdown_table(["", "test AUC", "test ECE"], [
            ["ensemble", format_value(ens_auc), format_value(ens_ece)],
            [f"best member by test AUC ({best['label']})", format_value(mem_auc),
             format_value(mem_ece)]]), ""]
    return lines


def _runs_table(rows: list[dict[str, Any]], metrics: list[str]) -> str:
    body = []
    for row in rows:
        if row["backbone"] == "ensemble":
            continue
        for seed, run in zip(row["seeds"], row["runs"]):
            values = _run_metrics(Path(run))
            body.append([row["model"], seed, *(format_value(values.get(m)) for m in metrics),
                         format_value(values.get("train_seconds"), 0), Path(run).name])
    return markdown_table(["model", "seed", *metrics, "train s", "folder"], body)


def _run_metrics(run: Path) -> dict[str, Any]:
    try:
        data = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {**(data.get("test") or {}), "train_seconds": data.get("train_seconds")}
