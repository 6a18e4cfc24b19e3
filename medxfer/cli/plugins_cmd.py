"""``medxfer plugins``: every registered plugin with its kind, distribution and capabilities."""

from __future__ import annotations

import json
from typing import Any

import typer

from medxfer.cli.console import out
from medxfer.cli.state import state_of


def plugin_rows(ctx: typer.Context) -> list[dict[str, Any]]:
    """One dict per registered plugin: name, kind, distribution, version, plugin,
    description and capabilities (a backbone's, with the named weights on this machine
    now; ``None`` for other kinds and for backbones that declare none)."""
    registries = state_of(ctx).registries
    return [
        {"name": e.name, "kind": e.kind, "distribution": e.distribution, "version": e.version,
         "plugin": e.plugin, "description": e.description,
         "capabilities": e.capabilities.to_json() if e.capabilities is not None else None}
        for e in registries.all_entries()
    ]


def capabilities_summary(row: dict[str, Any]) -> str:
    """The short capabilities column of the table (empty for plugins that declare none)."""
    from medxfer.plugin_kit.capabilities import BackboneCapabilities

    data = row.get("capabilities")
    if not data:
        return ""
    caps = BackboneCapabilities.from_value({k: v for k, v in data.items() if k != "offline"})
    return caps.summary(data.get("offline"))


def register(app: typer.Typer) -> None:
    """Add the ``plugins`` command to ``app``."""

    @app.command("plugins")
    def plugins(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
        kind: str | None = typer.Option(
            None, "--kind", help="Only this kind: backbone, strategy, domain_adaptation, combiner, "
            "logger."),
    ) -> None:
        """List registered plugins: name, kind, providing distribution and version, and what
        each backbone builds (2D/3D, smallest input, output) and which of its named weights
        are on this machine."""
        from rich.table import Table

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
        with_capabilities = any(r["capabilities"] for r in rows)
        if with_capabilities:
            table.add_column("capabilities")
        for r in rows:
            cells = [r["kind"], r["name"], r["distribution"], r["version"], r["description"]]
            table.add_row(*cells, *([capabilities_summary(r)] if with_capabilities else []))
        out().print(table)
        broken = state_of(ctx).manager.broken
        if broken:
            out().print(f"{len(broken)} plugin(s) skipped; see the warnings above.")
