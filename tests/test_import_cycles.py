"""medxfer's modules import each other without cycles, counting the imports inside functions
too (a function-local import only hides a cycle; it does not remove it)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"medxfer": REPO / "medxfer", "medxfer_plugins": REPO / "plugins"}


def modules() -> dict[str, Path]:
    """Every module of the two packages by its dotted name (a package by its own name)."""
    found = {}
    for package, base in PACKAGES.items():
        for path in base.rglob("*.py"):
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The known modules ``module`` imports anywhere except under ``if TYPE_CHECKING``."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                names.extend(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parent = package[:len(package) - child.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                names.extend(f"{base}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {r for r in map(resolve, names) if r and r != module}


def test_no_module_imports_itself_through_others():
    known = modules()
    assert len(known) > 100  # the walk found the packages
    graph = {module: imported(module, path, known) for module, path in known.items()}
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_a_cycle_is_found(tmp_path, monkeypatch):
    """The check itself: two modules that import each other inside functions are a cycle."""
    package = tmp_path / "medxfer"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from medxfer import b\n")
    (package / "b.py").write_text("from medxfer.a import f\n")
    monkeypatch.setitem(PACKAGES, "medxfer", package)
    monkeypatch.setitem(PACKAGES, "medxfer_plugins", tmp_path / "none")
    known = modules()
    graph = {module: imported(module, path, known) for module, path in known.items()}
    assert graph["medxfer.a"] == {"medxfer.b"} and graph["medxfer.b"] == {"medxfer.a"}
