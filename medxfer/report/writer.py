"""Write a run's ``report.md`` and ``report.html``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medxfer.io import atomic_write_text
from medxfer.report.content import build_report_content
from medxfer.report.html_page import render_html
from medxfer.report.markdown import render_markdown

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def write_report(run_dir: str | os.PathLike[str], summary: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into the run folder, each atomically.

    Args:
        run_dir: The run folder (created if needed); figure paths in ``summary`` are
            relative to it.
        summary: The run summary also written as ``metrics.json`` (see
            :func:`~medxfer.report.content.build_report_content` for its keys). Optional
            keys may be missing; NaN and None values read ``n/a``.

    Returns:
        ``(path of report.md, path of report.html)``.
    """
    run_dir = Path(run_dir)
    content = build_report_content(summary, run_dir)
    md_path, html_path = run_dir / REPORT_MD, run_dir / REPORT_HTML
    atomic_write_text(md_path, render_markdown(content))
    atomic_write_text(html_path, render_html(content))
    return md_path, html_path
