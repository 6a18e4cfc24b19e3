"""``medxfer compare``: a backbone x strategy x seed study with tables and figures."""

from __future__ import annotations

from pathlib import Path

import typer

from medxfer.cli.console import err, out
from medxfer.cli.state import state_of


def register(app: typer.Typer) -> None:
    """Add the ``compare`` command to ``app``."""

    @app.command("compare")
    def compare(
        ctx: typer.Context,
        config: Path = typer.Argument(..., help="Run config (YAML) every cell starts from."),
        backbones: str = typer.Option(..., "--backbones", help="Comma-separated backbone "
                                      "plugins, e.g. basic_cnn,lenet,alexnet; LABEL=BACKBONE "
                                      "runs one backbone under its own label (with its own "
                                      "--backbone-set), e.g. acs=mobilenet_v2."),
        strategies: str = typer.Option(..., "--strategies", help="Comma-separated strategy "
                                       "plugins, e.g. feature_extraction,full_finetune,scratch."),
        seeds: int = typer.Option(3, "--seeds", help="Seeds per cell: train.seed, +1, ..."),
        output: Path = typer.Option(..., "--output", "-o", help="Folder of the study; run "
                                    "the same command again to resume it."),
        pretrain_config: Path | None = typer.Option(
            None, "--pretrain", help="Config of a labelled source dataset: each backbone is "
            "first pretrained on it (`medxfer pretrain`) and the transfer strategies start "
            "from that."),
        pretrain_overrides: list[str] = typer.Option(
            [], "--pretrain-set", help="Override a key of the --pretrain config (repeatable)."),
        ensemble: str = typer.Option(
            "mean", "--ensemble", help="Combiner of the ensemble row (mean, vote, weighted, "
            "stacking), or 'none'."),
        backbone_sets: list[str] = typer.Option(
            [], "--backbone-set", help="Override a key for one backbone's cells and its "
            "pretraining, e.g. alexnet:data.preprocess.image_size=[64,64] (repeatable)."),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override a config key of every cell, e.g. --set train.epochs=5 "
            "(repeatable)."),
        device: str = typer.Option("auto", "--device", help="Device of the ensemble's "
                                   "inference: auto, cpu or cuda[:N]."),
    ) -> None:
        """Run every backbone x strategy x seed, then write comparison.md/.csv/.json, figures
        and an ensemble row. Finished cells are skipped, so a killed study resumes."""
        from medxfer.config import load_config
        from medxfer.workflows.compare import (
            parse_backbone_sets,
            parse_names,
            plan_grid,
            run_grid,
        )
        from medxfer.workflows.compare_summary import add_ensemble_row, aggregate, write_comparison
        from medxfer.errors import ConfigError
        from medxfer.locking import locked_folder

        registries = state_of(ctx).registries
        cfg = load_config(config, overrides)
        source = load_config(pretrain_config, pretrain_overrides) if pretrain_config else None
        if pretrain_overrides and source is None:
            raise ConfigError("--pretrain-set needs --pretrain SOURCE_CONFIG")
        if ensemble != "none":
            from medxfer.tasks import task_of
            from medxfer.workflows.ensemble import check_spatial_combiner, make_combiner

            check_spatial_combiner(task_of(cfg), make_combiner(registries, ensemble, {}),
                                   f"--ensemble {ensemble!r}", "for a segmentation study "
                                   "choose mean, vote, weighted or none")
        names = parse_names(backbones, "--backbones")
        with locked_folder(output):  # one study writing this folder at a time
            grid = plan_grid(cfg, output, names, parse_names(strategies, "--strategies"),
                             seeds, overrides=overrides, pretrain_config=source,
                             backbone_sets=parse_backbone_sets(backbone_sets, names),
                             registries=registries)
            results = run_grid(grid, registries=registries, announce=err().print)
            summary = aggregate(grid, results)
            if ensemble != "none":
                add_ensemble_row(summary, output, ensemble, registries, device=device)
            write_comparison(summary, output)
            print_comparison(summary, output)


def print_comparison(summary: dict, output: Path) -> None:
    """Print the comparison table (main metrics) and where the files are."""
    from rich.table import Table

    from medxfer.report.compare_markdown import format_stat, table_columns

    columns = table_columns(summary)[:6]
    table = Table(title="test split, mean ± std over seeds (95% CIs in comparison.md)")
    table.add_column("model")
    for name in columns:
        table.add_column(name)
    for row in summary["rows"]:
        table.add_row(row["model"], *(format_stat({**(row["metrics"].get(m) or {}), "ci95": None})
                                      for m in columns))
    console = out()
    console.print(table)
    console.print(f"comparison: {output / 'comparison.md'}")
