"""``medxfer config``: show the default config, validate a config file."""

from __future__ import annotations

from pathlib import Path

import typer

from medxfer.config import commented_default_config, config_to_yaml, load_config


def register(app: typer.Typer) -> None:
    """Add the ``config`` command group to ``app``."""
    group = typer.Typer(help="Show and check run configs.", no_args_is_help=True)

    @group.command("show")
    def show(
        config: Path | None = typer.Argument(
            None, help="A config file to show resolved; omit for the commented default."),
        overrides: list[str] = typer.Option([], "--set", help="Override a key: a.b=value."),
    ) -> None:
        """Print the default config with comments, or a config file fully resolved."""
        if config is None and not overrides:
            typer.echo(commented_default_config(), nl=False)
        else:
            typer.echo(config_to_yaml(load_config(config, overrides)), nl=False)

    app.add_typer(group, name="config")
