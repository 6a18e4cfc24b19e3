"""pyproject.toml stays in step with the source tree."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _packages_on_disk() -> set[str]:
    found = set()
    for top, import_name in (("medxfer", "medxfer"), ("plugins", "medxfer_plugins")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((import_name, *rel)))
    return found


def test_every_package_is_listed():
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == _packages_on_disk()


def test_every_builtin_entry_point_names_an_existing_module():
    for name, target in PYPROJECT["project"]["entry-points"]["medxfer"].items():
        parts = target.split(".")
        assert parts[0] == "medxfer_plugins", name
        path = ROOT / "plugins" / Path(*parts[1:])
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), target


def test_torch_pins():
    deps = PYPROJECT["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps
