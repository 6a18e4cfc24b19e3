"""report.md and report.html from a run summary: content, escaping, well-formed HTML."""

from __future__ import annotations

import math
from html.parser import HTMLParser

import pytest

from medxfer.report import build_report_content, write_report

VOID = {"meta", "img", "br", "hr", "link", "input"}


class StrictParser(HTMLParser):
    """Fails on a mismatched closing tag; collects tags, attributes and text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(html_text):
    parser = StrictParser()
    parser.feed(html_text)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


@pytest.fixture
def summary():
    return {
        "task": "classification",
        "val": {"auc": 0.9401, "accuracy": 0.88, "specificity": math.nan, "n": 120},
        "test": {"auc": 0.912, "accuracy": 0.861, "specificity": math.nan, "n": 624},
        "ci95": {"auc": [0.890, 0.931], "accuracy": [0.83, 0.889], "specificity": [None, None]},
        "train_seconds": 734.2,
        "backbone": {"name": "mobilenet_v2", "pretrained": "imagenet"},
        "strategy": {"name": "l2sp", "alpha": 0.01},
        "pretrained": {"source": "imagenet", "sha256": "b0353104"},
        "load_report": {"loaded": 312, "expected": 312, "missing": [], "unexpected": []},
        "threshold": {"value": 0.4213, "method": "val_youden"},
        "confusion_matrix": [[180, 54], [33, 357]],
        "class_names": ["normal", "pneumonia"],
        "figures": ["figures/training_curves.png", "figures/roc_curve.png"],
        "history": [{"epoch": 1, "train_loss": 0.7}, {"epoch": 2, "train_loss": 0.5}],
        "loss": {"alpha": 0.01, "beta": 1.0},
        "best_epoch": 2,  # counted from 1, as metrics.json, the console and the report do
        "device": "cuda:0",
        "config_path": "configs/run.yaml",
        "bootstrap": 1000,
    }


def test_markdown_report(tmp_path, summary):
    md_path, html_path = write_report(tmp_path, summary)
    assert (md_path, html_path) == (tmp_path / "report.md", tmp_path / "report.html")
    md = md_path.read_text(encoding="utf-8")
    assert "| Metric | Validation | Test (95% CI) |" in md
    assert "| AUC (ROC) | 0.940 | 0.912 [0.890, 0.931] |" in md
    assert "| Specificity | n/a | n/a |" in md
    assert "| Cases (n) | 120 | 624 |" in md
    assert "0.421" in md and "Youden" in md
    assert "| normal | 180 | 54 |" in md
    assert "![Training curves](figures/training_curves.png)" in md
    for text in ("mobilenet_v2", "l2sp (alpha=0.01)", "312 of 312", "alpha = 0.01, beta = 1",
                 "Best epoch | 2", "cuda:0", "12 min 14 s"):
        assert text in md, text
    assert not list(tmp_path.glob(".*.tmp"))


def test_metric_rows_follow_the_metric_table(summary):
    """Rows in the table's order and with its labels; ECE, which it does not rank, last."""
    values = {"accuracy": 0.8, "balanced_accuracy": 0.7, "precision": 0.6, "recall": 0.5,
              "specificity": 0.4, "f1": 0.3, "auc": 0.9, "n": 50, "ece": 0.05, "loss": 0.4}
    summary.update(val=values, test=values, ci95={})
    content = build_report_content(summary)
    assert [row[0] for row in content.metric_rows] == [
        "AUC (ROC)", "Accuracy", "Balanced accuracy", "Recall (sensitivity)", "Specificity",
        "Precision (PPV)", "F1", "Loss", "Cases (n)", "ECE"]
    assert content.metric_rows[-1][1:] == ["0.050", "0.050"]


def test_report_names_the_kept_epoch_of_select_last(tmp_path, summary):
    summary.update(select="last", monitor=["auc", "max"], best_epoch=20)
    md = write_report(tmp_path, summary)[0].read_text(encoding="utf-8")
    assert "Kept epoch | 20 (the last)" in md and "Best epoch" not in md


def test_html_report_is_well_formed_and_self_contained(tmp_path, summary):
    _, html_path = write_report(tmp_path, summary)
    page = html_path.read_text(encoding="utf-8")
    parser = parse(page)
    text = " ".join(parser.text)
    assert "0.912 [0.890, 0.931]" in text and "n/a" in text
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert images == ["figures/training_curves.png", "figures/roc_curve.png"]
    tags = {tag for tag, _ in parser.tags}
    assert "script" not in tags and "link" not in tags
    assert "http://" not in page and "https://" not in page


def test_user_strings_are_escaped(tmp_path, summary):
    summary["strategy"] = {"name": "<script>alert(1)</script>", "note": "a & b"}
    summary["class_names"] = ["<b>normal</b>", "pneumonia"]
    summary["figures"] = ['figures/x"onerror="alert(1).png', "javascript:alert(1)",
                          "/etc/passwd", "../outside.png"]
    _, html_path = write_report(tmp_path, summary)
    page = html_path.read_text(encoding="utf-8")
    assert "<script>" not in page and "<b>normal" not in page
    assert "&lt;script&gt;" in page and "a &amp; b" in page
    parser = parse(page)
    images = [attrs["src"] for tag, attrs in parser.tags if tag == "img"]
    assert images == ["figures/x%22onerror%3D%22alert%281%29.png"]
    assert all("onerror" not in attrs for _, attrs in parser.tags)


def test_minimal_summary_and_regression(tmp_path):
    md_path, html_path = write_report(tmp_path / "run", {
        "task": "regression", "val": {"mae": 1.5, "r2": math.nan},
        "test": {"mae": 1.7, "r2": 0.61}})
    md = md_path.read_text(encoding="utf-8")
    assert "| MAE | 1.500 | 1.700 |" in md and "| R² | n/a | 0.610 |" in md
    assert "Decision threshold" not in md and "Confusion matrix" not in md
    parse(html_path.read_text(encoding="utf-8"))
    md_path, _ = write_report(tmp_path / "empty", {})
    assert md_path.read_text(encoding="utf-8").startswith("# medxfer run report")


def test_summary_as_the_pipeline_writes_it(tmp_path):
    """Keys as a classification run's evaluation writes them: flat threshold plus its source, etc."""
    summary = {
        "task": "classification", "val": {"auc": 0.8, "loss": 0.41}, "test": {"auc": 0.7},
        "ci95": {"auc": [0.6, 0.79], "loss": [None, None]},
        "threshold": 0.37, "threshold_source": "val_f1 on validation",
        "monitor": ["auc", "max"], "best_epoch": 4, "epochs_run": 5, "stopped_early": True,
        "splits": {"train": 80, "val": 10, "test": 10}, "backbone": "basic_cnn",
        "strategy": {"name": "partial", "freeze": 2}, "pretrained": "none",
        "load_report": {"source": "imagenet", "loaded": 10, "expected": 12,
                        "skipped": ["fc.weight", "fc.bias"], "sha256": None},
        "precision": "fp32", "device": "cpu", "history": None, "figures": [],
    }
    md = write_report(tmp_path, summary)[0].read_text(encoding="utf-8")
    for text in ("0.370, chosen on the validation set by maximising F1", "5 (stopped early)",
                 "4 (by auc, max)", "train 80, val 10, test 10", "10 of 12",
                 "skipped: 2 (fc.weight, fc.bias)", "| Loss | 0.410 | n/a |",
                 "| AUC (ROC) | 0.800 | 0.700 [0.600, 0.790] |"):
        assert text in md, text
