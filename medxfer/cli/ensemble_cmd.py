"""``medxfer ensemble``: combine finished runs and compare the ensemble with each member."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medxfer.cli.state import state_of
from medxfer.errors import ConfigError


def parse_options(texts: list[str]) -> dict[str, Any]:
    """``["key=value", ...]`` to a dict; values are read as YAML data (``weights=[1,0,0]``).

    Raises:
        ConfigError: for an entry without ``=`` or a key given twice.
    """
    import yaml

    from medxfer.bounded_yaml import load_yaml

    options: dict[str, Any] = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--option {text!r}: expected KEY=VALUE, e.g. weights=[2,1,1]")
        if key in options:
            raise ConfigError(f"--option {key!r} is given twice")
        try:
            options[key] = load_yaml(raw, f"the value of --option {key}") if raw.strip() \
                else None
        except yaml.YAMLError:
            options[key] = raw
    return options


def register(app: typer.Typer) -> None:
    """Add the ``ensemble`` command to ``app``."""

    @app.command("ensemble")
    def ensemble(
        ctx: typer.Context,
        runs: list[Path] = typer.Option(
            ..., "--runs", help="Folders of finished `medxfer run`s, two or more: "
            "--runs A B C (or --runs A --runs B ...)."),
        more_runs: list[Path] = typer.Argument(
            None, hidden=True, help="Further run folders after --runs A."),
        combiner: str = typer.Option(
            "mean", "--combiner", help="Combiner plugin: mean, vote, weighted, stacking, ... "
            "(`medxfer plugins --kind combiner` lists them)."),
        options: list[str] = typer.Option(
            [], "--option", help="Combiner option KEY=VALUE, e.g. --option weights=[2,1,1] "
            "(repeatable)."),
        output: Path = typer.Option(
            ..., "--output", "-o", help="New or empty folder for ensemble.json, ensemble.md, "
            "predictions and figures."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    ) -> None:
        """Combine finished runs and evaluate the ensemble and each member on the same test set.

        Members may differ in backbone, strategy and seed, but must share the task, the
        classes and the validation and test cases. The combiner is fitted on validation
        outputs only. Classification adds the expected calibration error and a
        reliability diagram to the usual metrics; segmentation reports Dice, IoU, HD95.
        """
        from medxfer.workflows.ensemble import check_output_dir, run_ensemble

        runs = [*runs, *(more_runs or [])]
        parsed = parse_options(options)
        check_output_dir(output)
        summary = run_ensemble(runs, combiner, output, combiner_options=parsed,
                               registries=state_of(ctx).registries, device=device)
        print_ensemble_summary(summary, output)


def print_ensemble_summary(summary: dict[str, Any], output: Path) -> None:
    """Print one row of test metrics per member and one for the ensemble."""
    from rich.table import Table

    from medxfer.cli.console import out
    from medxfer.metric_table import metrics_for
    from medxfer.report import format_value

    keys = metrics_for(summary["task"], shown_in="ensemble_console")
    table = Table(title=f"ensemble of {len(summary['members'])} runs — test split")
    table.add_column("model")
    for key in keys:
        table.add_column(key)
    for row in [*summary["members"], summary["ensemble"]]:
        test = row.get("test") or {}
        table.add_row(row["label"], *(format_value(test.get(k)) for k in keys))
    console = out()
    console.print(table)
    console.print(f"report: {output / 'ensemble.md'}")
