"""The ``medxfer`` command-line interface (Typer)."""

from medxfer.cli.app import build_app, main

__all__ = ["build_app", "main"]
