"""``medxfer pretrain``: train a backbone on a labelled source dataset as a transfer source."""

from __future__ import annotations

from pathlib import Path

import typer

from medxfer.cli.console import out
from medxfer.cli.run_cmd import print_summary
from medxfer.cli.state import state_of


def register(app: typer.Typer) -> None:
    """Add the ``pretrain`` command to ``app``."""

    @app.command("pretrain")
    def pretrain_command(
        ctx: typer.Context,
        config: Path = typer.Argument(..., help="Run config (YAML) on the labelled source "
                                      "dataset."),
        output: Path = typer.Option(..., "--output", "-o", help="New folder for the "
                                    "pretraining run and its transfer_source.json."),
        backbone: str | None = typer.Option(
            None, "--backbone", help="Backbone to pretrain (replaces model.backbone; the "
            "config's options of another backbone are dropped, --set model.backbone.* kept)."),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override a config key, e.g. --set train.epochs=3 (repeatable)."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue the pretraining in --output from its last "
            "checkpoint."),
    ) -> None:
        """Train a backbone on a labelled source dataset and keep it as a transfer source.

        The result is a normal run folder (metrics and report on the source data) plus
        transfer_source.json. Transfer from it with `model.backbone.pretrained: OUTPUT`.
        """
        from medxfer.config import load_config
        from medxfer.workflows.compare import with_backbone
        from medxfer.workflows.preflight import check_config
        from medxfer.workflows.pretrain import pretrain_in_folder

        cfg = load_config(config, overrides)
        if backbone:
            cfg = with_backbone(cfg, backbone, overrides)
        registries = state_of(ctx).registries
        check_config(cfg, registries)
        record = pretrain_in_folder(cfg, output, registries=registries, resume=resume)
        summary = {"backbone": record["backbone"]["name"], "strategy": record["strategy"],
                   "test": record["source_test"], "ci95": {},
                   "train_seconds": _train_seconds(output)}
        print_summary(summary, output)
        out().print(f"transfer source: {output}  (use model.backbone.pretrained: {output})")


def _train_seconds(run_dir: Path) -> float:
    import json

    try:
        return float(json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan")
