"""Consoles for CLI output: results to stdout, messages and errors to stderr.

What the CLI prints holds text the user or a file chose (paths, keys, column names,
messages quoting them), so these consoles read no markup and no emoji codes: ``[bold]`` and
``:thumbs_up:`` in a path print as they are. Styles are given as :class:`rich.text.Text`.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text


def out() -> Console:
    """A console on the current stdout (created per call so tests can capture it)."""
    return Console(soft_wrap=True, markup=False, emoji=False)


def err() -> Console:
    """A console on the current stderr."""
    return Console(stderr=True, soft_wrap=True, markup=False, emoji=False)


def error(message: str) -> None:
    """Print an error message to stderr."""
    err().print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


def warn(message: str) -> None:
    """Print a warning to stderr."""
    err().print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False)
