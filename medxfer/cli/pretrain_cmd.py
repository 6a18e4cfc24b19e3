"""``medxfer pretrain``: train a backbone on a labelled source dataset as a transfer source,
or (``--ssl``) self-supervised on a dataset's training images."""

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
                                      "dataset; with --ssl, a config or the data itself."),
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
        ssl: str | None = typer.Option(
            None, "--ssl", help="Self-supervised instead, labels unused: contrastive (SimCLR) "
            "or genesis (Models Genesis restoration), on the training images of CONFIG's "
            "data, or of CONFIG itself when it is a data path (then --set the rest)."),
    ) -> None:
        """Train a backbone on a labelled source dataset and keep it as a transfer source.

        The result is a normal run folder (metrics and report on the source data) plus
        transfer_source.json. Transfer from it with `model.backbone.pretrained: OUTPUT`.
        With --ssl the folder holds the pretrained backbone, its loss per epoch and the
        same transfer_source.json.
        """
        if ssl is not None:
            _ssl_pretrain(ctx, ssl, config, output, backbone, overrides, resume)
            return
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


def _ssl_pretrain(ctx: typer.Context, method: str, source: Path, output: Path,
                  backbone: str | None, overrides: list[str], resume: bool) -> None:
    """``medxfer pretrain --ssl``: SOURCE is a run config (YAML) or the data itself."""
    from medxfer.config import load_config
    from medxfer.errors import ConfigError
    from medxfer.workflows.compare import with_backbone
    from medxfer.workflows.preflight import check_config
    from medxfer.workflows.ssl_pretrain import ssl_pretrain_in_folder

    if resume:
        raise ConfigError("--resume: a self-supervised pretraining (--ssl) starts again; "
                          "give a new --output folder")
    if source.suffix.lower() in (".yaml", ".yml"):
        cfg = load_config(source, overrides)
    else:
        cfg = load_config(None, [f"data.path={source.resolve()}", *overrides])
    if backbone:
        cfg = with_backbone(cfg, backbone, overrides)
    registries = state_of(ctx).registries
    check_config(cfg, registries)
    record = ssl_pretrain_in_folder(cfg, method, output, registries=registries,
                                    progress=out().print)
    info = record["ssl"]
    out().print(f"{method}: {info['train_images']} training images (labels unused), "
                f"{info['epochs']} epochs, final loss {info['final_loss']:.4f}")
    out().print(f"transfer source: {output}  (use model.backbone.pretrained: {output})")


def _train_seconds(run_dir: Path) -> float:
    import json

    try:
        return float(json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))["train_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("nan")
