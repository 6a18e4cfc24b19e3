"""What a run report says, independent of how it is rendered (Markdown or HTML).

:func:`build_report_content` turns the run summary (the dict also written as
``metrics.json``) into plain strings and tables. Every optional key may be missing and every
number may be NaN or None: a missing section is left out, an undefined value reads ``n/a``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

from medxfer.metric_table import TASKS, metrics_for
from medxfer.metric_table import label as metric_label
from medxfer.report.domain_content import add_domain_section
from medxfer.report.members_content import add_members_section
from medxfer.report.plan_content import add_plan_section
from medxfer.report.seg_content import add_segmentation_sections
from medxfer.report.tables import (
    NA,
    as_list,
    as_number,
    ci_bounds,
    display_epoch,
    format_ci,
    format_value,
    ordered_metrics,
)

THRESHOLD_METHODS = {
    "val_youden": "chosen on the validation set by maximising Youden's J "
                  "(sensitivity + specificity - 1)",
    "val_f1": "chosen on the validation set by maximising F1",
    "val_accuracy": "chosen on the validation set by maximising accuracy",
    "val_accuracy_1se": "chosen on the validation set: of the thresholds within one standard "
                        "error of the best accuracy, the one nearest 0.5",
    "fixed": "fixed in the config (eval.fixed_threshold)",
}
_LOADED_KEYS = ("loaded", "tensors_loaded", "n_loaded", "num_loaded")
_EXPECTED_KEYS = ("expected", "tensors_expected", "n_expected", "num_expected", "total")


@dataclass
class ReportContent:
    """A run report as text: each field is one section (empty means left out)."""

    title: str
    info: list[tuple[str, str]] = field(default_factory=list)
    metric_header: list[str] = field(default_factory=list)
    metric_rows: list[list[str]] = field(default_factory=list)
    metric_notes: list[str] = field(default_factory=list)
    threshold: str | None = None
    cm_labels: list[str] = field(default_factory=list)
    cm: list[list[str]] = field(default_factory=list)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (URL-quoted path, caption)
    # segmentation: one row per foreground class and a mean row (see report.seg_content)
    class_header: list[str] = field(default_factory=list)
    class_rows: list[list[str]] = field(default_factory=list)
    class_notes: list[str] = field(default_factory=list)
    # domain adaptation: source and target test side by side (see report.domain_content)
    domain_header: list[str] = field(default_factory=list)
    domain_rows: list[list[str]] = field(default_factory=list)
    domain_notes: list[str] = field(default_factory=list)
    # deep ensemble (ensemble.members > 1): every member beside the ensemble
    member_header: list[str] = field(default_factory=list)
    member_rows: list[list[str]] = field(default_factory=list)
    member_notes: list[str] = field(default_factory=list)
    # a planned run (medxfer run DATA): key, value and reason per planned choice
    plan_rows: list[list[str]] = field(default_factory=list)
    plan_notes: list[str] = field(default_factory=list)


def build_report_content(summary: Mapping[str, Any],
                         run_dir: str | os.PathLike[str] | None = None) -> ReportContent:
    """The sections of a run report from a run summary.

    Args:
        summary: ``task``, ``val``, ``test``, ``ci95``, ``train_seconds``, ``backbone``,
            ``strategy``, ``pretrained`` and optionally ``threshold`` (a number or
            ``{value, method}``), ``threshold_method``, ``confusion_matrix``,
            ``class_names``, ``figures``, ``history``, ``loss`` (``{alpha, beta}``),
            ``threshold_source``, ``load_report``, ``random_start`` (the strategy froze or
            pulled towards random starting weights), ``best_epoch``, ``monitor``, ``device``,
            ``precision``, ``config_path``, ``bootstrap`` (number of resamples),
            ``domain_adaptation``, ``epochs``/``epochs_run``, ``stopped_early``, ``splits``,
            ``data_source``, ``title``, ``target_test`` (metrics on the target domain's
            test split, shown beside the source test metrics), ``target_source`` and
            ``ensemble`` (a deep ensemble's members, shown in their own table).
            A task with per-class metrics (segmentation) gets a table per class instead,
            from ``dice_<class>``/``iou_<class>``/``hd95_<class>`` and
            ``spacing``/``spacing_assumed`` (see
            :func:`~medxfer.report.seg_content.add_segmentation_sections`).
        run_dir: The run folder; figure paths are made relative to it.
    """
    task = str(summary.get("task") or "run")
    content = ReportContent(title=_title(summary, task))
    content.info = _run_info(summary, task, run_dir)
    per_class = metrics_for(task, per_class=True) if task in TASKS else ()
    if not per_class:
        _metric_table(content, summary)
    content.threshold = _threshold(summary)
    _confusion(content, summary)
    content.figures = _figures(summary.get("figures"), run_dir)
    if per_class:
        add_segmentation_sections(content, summary)
    if isinstance(summary.get("target_test"), Mapping):
        add_domain_section(content, summary)
    if isinstance(summary.get("ensemble"), Mapping):
        add_members_section(content, summary)
    add_plan_section(content, summary)
    return content


def describe(value: Any) -> str:
    """A config-like value in one line: ``name (k=v, ...)``, ``k=v, ...``, or ``n/a``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NA
    if isinstance(value, Mapping):
        options = {k: v for k, v in value.items() if k != "name" and v is not None}
        text = ", ".join(f"{k}={describe(v)}" for k, v in options.items())
        if "name" in value:
            return f"{value['name']} ({text})" if text else str(value["name"])
        return text or NA
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(describe(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _title(summary: Mapping[str, Any], task: str) -> str:
    if summary.get("title"):
        return str(summary["title"])
    parts = [_name(summary.get(k)) for k in ("backbone", "strategy")]
    parts = [p for p in parts if p]
    return f"medxfer {task} report" + (f": {' + '.join(parts)}" if parts else "")


def _name(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return str(value["name"]) if value.get("name") is not None else None
    return None if value is None else str(value)


def _run_info(summary: Mapping[str, Any], task: str,
              run_dir: str | os.PathLike[str] | None) -> list[tuple[str, str]]:
    info: list[tuple[str, str]] = []
    if run_dir is not None:
        info.append(("Run folder", Path(run_dir).name))
    names = as_list(summary.get("class_names"))
    info.append(("Task", task + (f" ({len(names)} classes: {', '.join(map(str, names))})"
                                 if names else "")))
    for key, label in (("backbone", "Backbone"), ("strategy", "Strategy"),
                       ("domain_adaptation", "Domain adaptation"),
                       ("pretrained", "Pretrained weights")):
        if key in summary and summary[key] is not None:
            info.append((label, describe(summary[key])))
    if summary.get("random_start"):
        info.append(("Warning", f"strategy {_name(summary.get('strategy'))} froze or pulled "
                                "towards the backbone's starting weights, which were random"))
    if summary.get("load_report") is not None:
        info.append(("Tensors loaded", _load_report(summary["load_report"])))
    ensemble = summary.get("ensemble")
    if isinstance(ensemble, Mapping):
        seeds = ", ".join(str(s) for s in as_list(ensemble.get("seeds")) or [])
        info.append(("Ensemble", f"{ensemble.get('members')} networks trained apart "
                                 f"(seeds {seeds}); {ensemble.get('combine', 'outputs averaged')}"))
    loss = summary.get("loss")
    if isinstance(loss, Mapping):
        alpha, beta = (_plain(loss.get(k)) for k in ("alpha", "beta"))
        info.append(("Combined loss", f"L_total = alpha * L_pre + beta * L_new, "
                                      f"alpha = {alpha}, beta = {beta}"))
    history = summary.get("history")
    history = as_list(history)
    epochs = next((summary[k] for k in ("epochs", "epochs_run") if summary.get(k) is not None),
                  len(history) if history else None)
    if epochs is not None:
        stopped = " (stopped early)" if summary.get("stopped_early") else ""
        info.append(("Epochs", format_value(epochs) + stopped))
    if summary.get("best_epoch") is not None:
        monitor = summary.get("monitor")
        monitor = [monitor] if isinstance(monitor, str) else as_list(monitor) or []
        kept = display_epoch(summary["best_epoch"])
        if summary.get("select") == "last":  # train.early_stopping.select: last
            info.append(("Kept epoch", kept + " (the last)"))
        else:
            by = (f" (by {monitor[0]}, {monitor[1]})" if len(monitor) == 2
                  else f" (by {monitor[0]})" if len(monitor) == 1 else "")
            info.append(("Best epoch", kept + by))
    splits = summary.get("splits")
    if isinstance(splits, Mapping) and splits:
        info.append(("Cases", ", ".join(f"{k} {format_value(v)}" for k, v in splits.items())))
    if summary.get("data_source") is not None:
        info.append(("Data", describe(summary["data_source"])))
    if "train_seconds" in summary:
        info.append(("Training time", _duration(summary["train_seconds"])))
    for key, label in (("device", "Device"), ("precision", "Precision"),
                       ("config_path", "Config")):
        if summary.get(key) is not None:
            info.append((label, str(summary[key])))
    return info


def _plain(value: Any) -> str:
    number = as_number(value)
    return NA if number is None else f"{number:g}"


def _load_report(report: Any) -> str:
    if not isinstance(report, Mapping):
        return describe(report)
    loaded = next((report[k] for k in _LOADED_KEYS if k in report), None)
    expected = next((report[k] for k in _EXPECTED_KEYS if k in report), None)
    parts = []
    if loaded is not None:
        parts.append(f"{format_value(loaded)} of {format_value(expected)}" if expected is not None
                     else format_value(loaded))
    used = set(_LOADED_KEYS + _EXPECTED_KEYS)
    for key, value in report.items():
        if key in used:
            continue
        if isinstance(value, (list, tuple)):
            shown = ", ".join(map(str, value[:5])) + (", ..." if len(value) > 5 else "")
            parts.append(f"{key}: {len(value)}" + (f" ({shown})" if value else ""))
        else:
            parts.append(f"{key}: {describe(value)}")
    return "; ".join(parts) or NA


def _duration(seconds: Any) -> str:
    number = as_number(seconds)
    if number is None:
        return NA
    if number < 60:
        return f"{number:.1f} s"
    minutes, secs = divmod(int(round(number)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{number:.0f} s ({f'{hours} h ' if hours else ''}{minutes} min {secs} s)"


def _metric_table(content: ReportContent, summary: Mapping[str, Any]) -> None:
    val = summary.get("val") if isinstance(summary.get("val"), Mapping) else {}
    test = summary.get("test") if isinstance(summary.get("test"), Mapping) else {}
    ci = summary.get("ci95") if isinstance(summary.get("ci95"), Mapping) else {}
    names = ordered_metrics(val, test)
    if not names:
        return
    has_ci = any(None not in ci_bounds(bounds) for bounds in ci.values())
    content.metric_header = ["Metric", "Validation", "Test (95% CI)" if has_ci else "Test"]
    for name in names:
        content.metric_rows.append([metric_label(name), format_value(val.get(name)),
                                    format_ci(test.get(name), ci.get(name))])
    if has_ci:
        n_boot = as_number(summary.get("bootstrap"))
        resamples = f"{int(n_boot)} resamples, " if n_boot else ""
        content.metric_notes.append(
            f"95% CI: percentile bootstrap over test cases ({resamples}fixed seed).")
    content.metric_notes.append(f"{NA}: undefined on this data (e.g. AUC when only one class "
                                "is present) or not computed.")


def _threshold(summary: Mapping[str, Any]) -> str | None:
    raw = summary.get("threshold")
    method = summary.get("threshold_method") or summary.get("threshold_source")
    if isinstance(raw, Mapping):
        method = raw.get("method", method)
        raw = raw.get("value")
    if raw is None:
        return None
    text = format_value(raw)
    if method:
        # "val_youden" or a longer source such as "val_youden on validation"
        known = THRESHOLD_METHODS.get(str(method).split()[0]) if str(method).strip() else None
        text += f", {known or f'chosen by: {method}'}"
    return (text + ". A case is predicted positive when its positive-class probability is at "
            "least this value.")


def _confusion(content: ReportContent, summary: Mapping[str, Any]) -> None:
    cm = as_list(summary.get("confusion_matrix"))
    if not cm or not all(as_list(row) for row in cm):
        return
    names = as_list(summary.get("class_names")) or []
    if len(names) != len(cm):
        names = [str(i) for i in range(len(cm))]
    content.cm_labels = [str(n) for n in names]
    content.cm = [[format_value(int(v)) if as_number(v) is not None else NA for v in as_list(row)]
                  for row in cm]


def _figures(figures: Any, run_dir: str | os.PathLike[str] | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for item in as_list(figures) or []:
        rel = _relative(str(item), run_dir)
        if rel is None:
            continue
        caption = PurePosixPath(rel).stem.replace("_", " ").replace("-", " ")
        caption = caption[:1].upper() + caption[1:]
        out.append((quote(rel, safe="/"), caption.replace("Roc", "ROC")))
    return out


def _relative(path: str, run_dir: str | os.PathLike[str] | None) -> str | None:
    """``path`` relative to the run folder in POSIX form, or None when it points outside."""
    if urlsplit(path).scheme and len(urlsplit(path).scheme) > 1:
        return None  # a URL (http:, data:, javascript:): reports only link their own files
    candidate = Path(path)
    if candidate.is_absolute():
        if run_dir is None:
            return None
        try:
            candidate = candidate.resolve().relative_to(Path(run_dir).resolve())
        except ValueError:
            return None
    posix = PurePosixPath(candidate.as_posix())
    if ".." in posix.parts or not posix.parts:
        return None
    return str(posix)
