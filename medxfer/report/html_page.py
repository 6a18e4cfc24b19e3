"""The run report as one self-contained HTML page (``report.html``).

The page has inline CSS, no scripts and no external resources except the figure PNGs,
which are linked by their relative paths (``figures/*.png``). Every string that comes from
the run (names, options, paths) is HTML-escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from medxfer.report.content import ReportContent

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 60rem; padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #d0d7de; padding: .3rem .7rem; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.info th { font-weight: 600; }
p.note { color: #57606a; font-size: .9rem; margin: .2rem 0; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: .9rem; }
"""


def render_html(content: ReportContent) -> str:
    """Render a report as a complete HTML5 document.

    Args:
        content: What :func:`~medxfer.report.content.build_report_content` made.

    Returns:
        The page, ending with a newline.
    """
    body = [f"<h1>{escape(content.title)}</h1>"]
    if content.info:
        rows = "".join(f"<tr><th scope=\"row\">{escape(k)}</th><td>{escape(v)}</td></tr>"
                       for k, v in content.info)
        body += ["<h2>Run</h2>", f"<table class=\"info\"><tbody>{rows}</tbody></table>"]
    if content.class_rows:
        body += ["<h2>Metrics per class</h2>", _table(content.class_header, content.class_rows)]
        body += [f"<p class=\"note\">{escape(note)}</p>" for note in content.class_notes]
    if content.metric_rows:
        body += ["<h2>Metrics</h2>", _table(content.metric_header, content.metric_rows)]
        body += [f"<p class=\"note\">{escape(note)}</p>" for note in content.metric_notes]
    if content.domain_rows:
        body += ["<h2>Source and target domains</h2>",
                 _table(content.domain_header, content.domain_rows)]
        body += [f"<p class=\"note\">{escape(note)}</p>" for note in content.domain_notes]
    if content.member_rows:
        body += ["<h2>Ensemble members</h2>", _table(content.member_header, content.member_rows)]
        body += [f"<p class=\"note\">{escape(note)}</p>" for note in content.member_notes]
    if content.plan_rows:
        body += ["<h2>Plan</h2>", _table(["key", "value", "reason"], content.plan_rows)]
        body += [f"<p class=\"note\">{escape(note)}</p>" for note in content.plan_notes]
    if content.threshold:
        body += ["<h2>Decision threshold</h2>", f"<p>{escape(content.threshold)}</p>"]
    if content.cm:
        rows = [[label, *row] for label, row in zip(content.cm_labels, content.cm)]
        body += ["<h2>Confusion matrix (test)</h2>",
                 _table(["true / predicted", *content.cm_labels], rows)]
    if content.figures:
        body.append("<h2>Figures</h2>")
        for path, caption in content.figures:
            body.append(f"<figure><img src=\"{escape(path, quote=True)}\" "
                        f"alt=\"{escape(caption, quote=True)}\">"
                        f"<figcaption>{escape(caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(content.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th scope=\"col\">{escape(h)}</th>" for h in header)
    lines = []
    for row in rows:
        first, *rest = row
        cells = "".join(f"<td class=\"num\">{escape(v)}</td>" for v in rest)
        lines.append(f"<tr><th scope=\"row\">{escape(first)}</th>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
