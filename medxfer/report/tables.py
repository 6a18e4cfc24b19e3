"""Tables: value formatting, Markdown tables, per-case predictions (CSV), metrics (CSV/JSON).

Every writer is atomic (see :mod:`medxfer.io`). Missing and non-finite values are written
as ``n/a`` in human-readable tables and as empty cells in CSV.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.io import atomic_write_json, atomic_write_text
from medxfer.metric_table import sort_key

NA = "n/a"


def as_number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is missing, NaN, infinite or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_list(value: Any) -> list[Any] | None:
    """A list from a list, tuple or array (nested arrays become nested lists), else None."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def ci_bounds(ci: Any) -> tuple[float | None, float | None]:
    """``(low, high)`` of an interval given as a pair; ``(None, None)`` when it is not one."""
    pair = as_list(ci)
    if pair is None or len(pair) != 2:
        return None, None
    return as_number(pair[0]), as_number(pair[1])


def format_value(value: Any, digits: int = 3) -> str:
    """A metric value for people: ``0.912``, integers as integers, ``n/a`` when undefined."""
    number = as_number(value)
    if number is None:
        return NA
    integral = isinstance(value, (int, np.integer)) or abs(number) >= 10 ** digits
    if number.is_integer() and integral:
        return str(int(number))
    return f"{number:.{digits}f}"


def display_epoch(number: Any) -> str:
    """An epoch as ``metrics.json``, ``model.json``, the history, the console and the
    figures count it: from 1 (``n/a`` when missing)."""
    value = as_number(number)
    return NA if value is None else str(int(value))


def format_ci(value: Any, ci: Any, digits: int = 3) -> str:
    """``0.912 [0.890, 0.931]``; the value alone when the interval is missing or undefined."""
    text = format_value(value, digits)
    lo, hi = ci_bounds(ci)
    if text == NA or lo is None or hi is None:
        return text
    return f"{text} [{lo:.{digits}f}, {hi:.{digits}f}]"


def ordered_metrics(*tables: Mapping[str, Any] | None) -> list[str]:
    """Metric names of all ``tables``: those the metric table ranks in its order first, the
    rest as they come (see :func:`medxfer.metric_table.sort_key`)."""
    names: list[str] = []
    for table in tables:
        for name in table or {}:
            if name not in names:
                names.append(name)
    return sorted(names, key=sort_key)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured Markdown table; ``|`` in cells is escaped.

    Args:
        header: Column titles.
        rows: Cells (converted with ``str``).
        align: Per column ``"l"`` or ``"r"`` (default: first column left, others right).
    """
    align = align or ["l"] + ["r"] * (len(header) - 1)

    def cell(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


PREDICTIONS_CSV = "predictions.csv"
"""The per-case predictions file of a classification or regression run."""


def write_predictions_csv(path: str | os.PathLike[str], ids: Sequence[Any], y_true: Any,
                          probs: Any, y_pred: Any,
                          class_names: Sequence[str] | None = None) -> Path:
    """Write one row per case.

    Classification (``probs`` ``[N, C]``): columns ``id, label, prediction,
    prob_<class>...`` with integer class indices in ``label``/``prediction`` (the ``prob_``
    columns name the classes in index order). Regression (``probs`` None or one value per
    case): columns ``id, target, prediction``. A missing label (None/NaN, e.g. unlabelled
    inference) is an empty cell.

    Args:
        path: The CSV file (written atomically).
        ids: Case identifiers, length N.
        y_true: Labels or targets, length N (or None when unknown).
        probs: Class probabilities ``[N, C]``; None (or a 1-D array) for regression.
        y_pred: Predicted class indices or predicted values, length N.
        class_names: Names of the C classes (default ``"0"``, ``"1"``, ...).

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: when the lengths disagree.
    """
    ids = list(ids)
    n = len(ids)
    truth = [None] * n if y_true is None else list(np.asarray(y_true).ravel())
    pred = list(np.asarray(y_pred).ravel())
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    if probs is None or np.ndim(probs) == 1:
        _check_lengths(n, truth=truth, prediction=pred)
        writer.writerow(["id", "target", "prediction"])
        for case, t, p in zip(ids, truth, pred):
            writer.writerow([case, _csv_number(t), _csv_number(p)])
    else:
        prob = np.asarray(probs, dtype=np.float64).reshape(n, -1) if n else np.zeros((0, 0))
        names = [str(c) for c in as_list(class_names) or range(prob.shape[1])]
        if len(names) != prob.shape[1]:
            raise ValueError(f"{len(names)} class names for {prob.shape[1]} probability columns")
        _check_lengths(n, truth=truth, prediction=pred)
        writer.writerow(["id", "label", "prediction", *[f"prob_{c}" for c in names]])
        for case, t, p, row in zip(ids, truth, pred, prob):
            writer.writerow([case, _csv_label(t), _csv_label(p),
                             *[_csv_number(v) for v in row]])
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def write_per_case_csv(path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], *,
                       first: Sequence[str] = ("id",)) -> Path:
    """Write one row per case from dicts (e.g. per-case segmentation metrics).

    Columns are ``first`` and then every other key in the order the rows first give it;
    a key a row lacks, and any missing or non-finite number, is an empty cell. Strings are
    written as they are.

    Args:
        path: The CSV file (written atomically).
        rows: One mapping per case.
        first: Columns to put first.

    Returns:
        ``path`` as a Path.
    """
    columns = list(first)
    for row in rows:
        columns += [key for key in row if key not in columns]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([value if isinstance(value, str) else _csv_number(value)
                         for value in (row.get(key) for key in columns)])
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def write_metrics_csv(path: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Write ``metric, val, test, test_ci_low, test_ci_high`` rows from a run summary."""
    val, test, ci = (summary.get(k) or {} for k in ("val", "test", "ci95"))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "val", "test", "test_ci_low", "test_ci_high"])
    for name in ordered_metrics(val, test):
        lo, hi = ci_bounds(ci.get(name))
        writer.writerow([name, *(_csv_number(v) for v in (val.get(name), test.get(name), lo, hi))])
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def write_metrics_json(path: str | os.PathLike[str], summary: Mapping[str, Any]) -> Path:
    """Write ``summary`` as JSON (atomically), non-finite numbers as ``null``."""
    atomic_write_json(path, _json_safe(summary))
    return Path(path)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def _check_lengths(n: int, **columns: Sequence[Any]) -> None:
    for name, column in columns.items():
        if len(column) != n:
            raise ValueError(f"{n} ids but {len(column)} values in {name}")


def _csv_number(value: Any) -> str:
    number = as_number(value)
    if number is None:
        return ""
    return str(int(number)) if isinstance(value, (int, np.integer)) else repr(number)


def _csv_label(value: Any) -> str:
    number = as_number(value)
    return "" if number is None else str(int(number))
