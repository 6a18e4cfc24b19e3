"""The public plugin API: plugins import only it, the core never imports the plugins, and
every exported name is importable from ``medxfer`` with a docstring."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import medxfer
from medxfer import api

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "plugin_hooks.md").read_text(encoding="utf-8")
#: What a plugin may import of the core.
PUBLIC = {"medxfer", "medxfer.api"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            # ``from medxfer import weights`` imports a module too
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                      if node.module == "medxfer" and a.name not in api.__all__]
    return found


def plugin_sources() -> list[Path]:
    return sorted([*(ROOT / "plugins").rglob("*.py"), *(ROOT / "examples").rglob("*.py")])


@pytest.mark.parametrize("path", plugin_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_the_public_api(path):
    private = [f"{path.relative_to(ROOT)}:{line} imports {module}"
               for line, module in imported_modules(path)
               if (module == "medxfer" or module.startswith("medxfer."))
               and module not in PUBLIC]
    assert not private, "plugins import medxfer or medxfer.api only: " + "; ".join(private)


def test_plugins_use_only_names_the_api_exports():
    """``medxfer.<name>`` in a plugin is a name of the public API."""
    unknown = []
    for path in plugin_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "medxfer" and node.attr not in medxfer.__all__:
                unknown.append(f"{path.relative_to(ROOT)}:{node.lineno} medxfer.{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module in PUBLIC:
                unknown += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                            for a in node.names if a.name not in medxfer.__all__]
    assert not unknown, "not in medxfer.api.__all__: " + "; ".join(unknown)


def test_the_core_never_imports_the_builtin_plugins():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {module}"
                 for path in sorted((ROOT / "medxfer").rglob("*.py"))
                 for line, module in imported_modules(path)
                 if module == "medxfer_plugins" or module.startswith("medxfer_plugins.")]
    assert not offenders, "; ".join(offenders)


@pytest.mark.parametrize("name", api.__all__)
def test_every_api_name_is_importable_from_medxfer_and_documented(name):
    """Classes and functions have a docstring; every name is listed in the API section of
    docs/plugin_hooks.md (constants have no docstring of their own)."""
    value = getattr(medxfer, name)
    assert value is getattr(api, name)
    exec(f"from medxfer import {name}", {})  # noqa: S102 - the import a plugin writes
    if inspect.isclass(value) or inspect.isfunction(value):
        assert value.__doc__ and value.__doc__.strip(), f"medxfer.{name} has no docstring"
    assert "## The public API" in DOC
    assert f"`{name}`" in DOC.split("## The public API", 1)[1], \
        f"docs/plugin_hooks.md does not list {name} in its 'The public API' section"


def test_importing_medxfer_and_its_api_does_not_import_torch():
    code = ("import sys, medxfer, medxfer.api; medxfer.hookimpl; medxfer.Strategy; "
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_a_name_that_needs_torch_is_imported_on_first_use():
    from medxfer.models import Backbone

    assert medxfer.Backbone is Backbone and api.Backbone is Backbone
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        medxfer.NoSuchName  # noqa: B018
