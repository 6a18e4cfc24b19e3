"""Helpers for tests that fake installed plugin distributions."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str],
                      modules: dict[str, str] | None = None) -> Path:
    """Write a fake installed distribution (dist-info + modules) under ``site``.

    Args:
        site: A folder that the test puts on ``sys.path`` / ``PYTHONPATH``.
        dist: Distribution name.
        version: Its version.
        entry_points: ``medxfer`` entry-point name -> module.
        modules: Module name -> source text to write beside it.
    """
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[medxfer]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    return info
