"""Reports: tables (Markdown/CSV/JSON), figures (matplotlib PNG) and the run report page.

The trainer calls :func:`write_report` at the end of a run with the summary it also writes
as ``metrics.json``, after writing the figures with the ``plot_*`` functions and the
per-case predictions with :func:`write_predictions_csv` (segmentation: per-case metrics with
:func:`write_per_case_csv`).
"""

from __future__ import annotations

from medxfer.report.content import ReportContent, build_report_content
from medxfer.report.curves import plot_training_curves
from medxfer.report.figures import plot_confusion_matrix, plot_member_training_curves
from medxfer.report.html_page import render_html
from medxfer.report.markdown import render_markdown
from medxfer.report.roc import plot_roc_curve
from medxfer.report.seg_figures import plot_dice_boxplot, plot_segmentation_overlays, slice_view
from medxfer.report.tables import (
    PREDICTIONS_CSV,
    format_ci,
    format_value,
    markdown_table,
    write_metrics_csv,
    write_metrics_json,
    write_per_case_csv,
    write_predictions_csv,
)
from medxfer.report.writer import REPORT_HTML, REPORT_MD, write_report

__all__ = [
    "PREDICTIONS_CSV",
    "REPORT_HTML",
    "REPORT_MD",
    "ReportContent",
    "build_report_content",
    "format_ci",
    "format_value",
    "markdown_table",
    "plot_confusion_matrix",
    "plot_dice_boxplot",
    "plot_member_training_curves",
    "plot_roc_curve",
    "plot_segmentation_overlays",
    "plot_training_curves",
    "render_html",
    "render_markdown",
    "slice_view",
    "write_metrics_csv",
    "write_metrics_json",
    "write_per_case_csv",
    "write_predictions_csv",
    "write_report",
]
