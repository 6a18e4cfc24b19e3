"""``ensemble.md``: the Markdown page of ``medxfer ensemble``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medxfer.metric_table import metrics_for, short_label
from medxfer.tasks import get_task
from medxfer.report.tables import format_value, markdown_table


def render_ensemble_markdown(summary: Mapping[str, Any], ece_bins: int = 15) -> str:
    """``ensemble.md``: what was combined, and one row of test metrics per member and one
    for the ensemble (the metric table's ``ensemble`` columns of the task: classification
    accuracy, balanced accuracy, AUC, F1, ECE and the threshold; segmentation Dice, IoU,
    HD95).

    Args:
        summary: What :func:`medxfer.workflows.ensemble.run_ensemble` writes to ensemble.json.
        ece_bins: The number of confidence bins ECE used.
    """
    classification = get_task(summary["task"]).labels_are_classes  # decides at thresholds
    columns = metrics_for(summary["task"], shown_in="ensemble")
    header = ["model", "backbone", "strategy", "seed", *(short_label(k) for k in columns)]
    if classification:
        header.append("threshold")
    rows = []
    for row in [*summary["members"], summary["ensemble"]]:
        is_ensemble = row is summary["ensemble"]
        test = row.get("test") or {}
        cells = [f"**{row['label']}**" if is_ensemble else row["label"],
                 "" if is_ensemble else row["backbone"], "" if is_ensemble else row["strategy"],
                 "" if is_ensemble else row["seed"],
                 *(format_value(test.get(key)) for key in columns)]
        if classification:
            cells.append(format_value(row.get("threshold")))
        rows.append(cells)
    combiner = summary["combiner"]
    options = ", ".join(f"{k}={v}" for k, v in combiner.get("options", {}).items()) or "defaults"
    splits = summary["splits"]
    lines = [f"# Ensemble of {len(summary['members'])} runs: {combiner['name']}", "",
             f"Task: {summary['task']}; classes: {', '.join(summary['class_names'])}; "
             f"{splits['val']} validation and {splits['test']} test cases, the same for every "
             "member.", "",
             f"Combiner `{combiner['name']}` ({options}), fitted on validation outputs only. "
             "Test metrics:", "", markdown_table(header, rows), ""]
    if classification:
        lines += [f"Each row's binary decision threshold is chosen {summary['threshold_source']}"
                  " (the ensemble's: on its own validation outputs). ECE is the expected "
                  f"calibration error of the top-label confidence over {ece_bins} equal-width "
                  "bins (0 is perfectly calibrated).", "",
                  "![Reliability diagram](figures/reliability_diagram.png)", "",
                  "![ROC curve](figures/roc_curve.png)", ""]
    else:
        lines += ["Dice, IoU and HD95 are means over the test cases of the foreground classes "
                  "(HD95 in mm when data.preprocess.spacing is set, else in voxels). Per-case "
                  "values are in per_case.csv.", "",
                  "![Dice per class](figures/dice_per_class.png)", ""]
    return "\n".join(lines)
