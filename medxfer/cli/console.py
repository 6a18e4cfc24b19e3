"""Consoles for CLI output: results to stdout, messages and errors to stderr."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def out() -> Console:
    """A console on the current stdout (created per call so tests can capture it)."""
    return Console(soft_wrap=True)


def err() -> Console:
    """A console on the current stderr."""
    return Console(stderr=True, soft_wrap=True)


def error(message: str) -> None:
    """Print an error message to stderr."""
    err().print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)


def warn(message: str) -> None:
    """Print a warning to stderr."""
    err().print(f"[yellow]warning:[/] {escape(message)}", markup=True, highlight=False)
