"""``medxfer config``: show the default config, validate a config file."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``config`` command group to ``app``."""
    group = typer.Typer(help="Show and check run configs.", no_args_is_help=True)

    @group.command("show")
    def show(
        ctx: typer.Context,
        config: Path | None = typer.Argument(
            None, help="A config file to show resolved; omit for the commented default."),
        overrides: list[str] = typer.Option([], "--set", help="Override a key: a.b=value."),
    ) -> None:
        """Print the default config with comments, or a config file fully resolved (its
        plugins and their options checked; `medxfer run --check` also checks the data and
        the network)."""
        from medxfer.config import commented_default_config, config_to_yaml, load_config

        if config is None and not overrides:
            typer.echo(commented_default_config(), nl=False)
            return
        resolved = load_config(config, overrides)  # before the heavy imports below
        from medxfer.cli.state import state_of
        from medxfer.workflows.preflight import check_config

        check_config(resolved, state_of(ctx).registries, machine=False)  # maybe for a GPU
        typer.echo(config_to_yaml(resolved), nl=False)

    app.add_typer(group, name="config")
