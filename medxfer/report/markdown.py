"""The run report as Markdown (``report.md``)."""

from __future__ import annotations

from medxfer.report.content import ReportContent
from medxfer.report.tables import markdown_table


def render_markdown(content: ReportContent) -> str:
    """Render a report: run info, metrics (per class for segmentation), threshold,
    confusion matrix, figures.

    Args:
        content: What :func:`~medxfer.report.content.build_report_content` made.

    Returns:
        The Markdown text, ending with a newline.
    """
    out = [f"# {content.title}", ""]
    if content.info:
        info = markdown_table(["Setting", "Value"], content.info, align=["l", "l"])
        out += ["## Run", "", info, ""]
    if content.class_rows:
        out += ["## Metrics per class", "",
                markdown_table(content.class_header, content.class_rows), ""]
        out += [f"_{note}_  " for note in content.class_notes] + [""]
    if content.metric_rows:
        out += ["## Metrics", "", markdown_table(content.metric_header, content.metric_rows), ""]
        out += [f"_{note}_  " for note in content.metric_notes] + [""]
    if content.domain_rows:
        out += ["## Source and target domains", "",
                markdown_table(content.domain_header, content.domain_rows), ""]
        out += [f"_{note}_  " for note in content.domain_notes] + [""]
    if content.member_rows:
        out += ["## Ensemble members", "",
                markdown_table(content.member_header, content.member_rows), ""]
        out += [f"_{note}_  " for note in content.member_notes] + [""]
    if content.threshold:
        out += ["## Decision threshold", "", content.threshold, ""]
    if content.plan_rows:
        out += ["## Plan", "", markdown_table(["key", "value", "reason"], content.plan_rows,
                                             align=["l", "l", "l"]), ""]
        out += [f"_{note}_  " for note in content.plan_notes] + [""]
    if content.cm:
        header = ["true / predicted", *content.cm_labels]
        rows = [[label, *row] for label, row in zip(content.cm_labels, content.cm)]
        out += ["## Confusion matrix (test)", "", markdown_table(header, rows), ""]
    if content.figures:
        out += ["## Figures", ""]
        for path, caption in content.figures:
            out += [f"![{caption}]({path})", "", f"_{caption}_", ""]
    return "\n".join(out).rstrip("\n") + "\n"
