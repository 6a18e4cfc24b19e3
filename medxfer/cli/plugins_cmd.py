"""``medxfer plugins``: every registered plugin with its kind and distribution."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from medxfer.cli.console import out
from medxfer.cli.state import state_of


def plugin_rows(ctx: typer.Context) -> list[dict[str, str]]:
    """One dict per registered plugin: name, kind, distribution, version, plugin, description."""
    registries = state_of(ctx).registries
    return [
        {"name": e.name, "kind": e.kind, "distribution": e.distribution, "version": e.version,
         "plugin": e.plugin, "description": e.description}
        for e in registries.all_entries()
    ]


def register(app: typer.Typer) -> None:
    """Add the ``plugins`` command to ``app``."""

    @app.command("plugins")
    def plugins(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
        kind: str | None = typer.Option(
            None, "--kind", help="Only this kind: backbone, strategy, domain_adaptation, combiner."),
    ) -> None:
        """List registered plugins: name, kind, providing distribution and version."""
        from medxfer.plugins import KIND_HOOKS

        if kind is not None and kind not in KIND_HOOKS:
            from medxfer.errors import ConfigError

            raise ConfigError(f"--kind {kind!r}: choose one of {', '.join(KIND_HOOKS)}")
        rows = plugin_rows(ctx)
        if kind:
            rows = [r for r in rows if r["kind"] == kind]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="medxfer plugins")
        for column in ("kind", "name", "distribution", "version"):  # whole, to copy or grep
            table.add_column(column, no_wrap=True, overflow="fold")
        table.add_column("description")
        for r in rows:
            table.add_row(r["kind"], r["name"], r["distribution"], r["version"], r["description"])
        out().print(table)
        broken = state_of(ctx).manager.broken
        if broken:
            out().print(f"{len(broken)} plugin(s) skipped; see the warnings above.")
