"""Every hook is typed, documented in its docstring and in docs/plugin_hooks.md."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from medxfer import hookspecs

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugin_hooks.md"
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if name.startswith("medxfer_")]


def test_there_are_registration_and_lifecycle_hooks():
    for name in ("medxfer_register_backbones", "medxfer_register_strategies",
                 "medxfer_register_domain_adaptation", "medxfer_register_combiners",
                 "medxfer_register_commands", "medxfer_fit_start", "medxfer_epoch_start",
                 "medxfer_parameter_groups", "medxfer_extra_loss_terms",
                 "medxfer_after_backward", "medxfer_epoch_end", "medxfer_fit_end",
                 "medxfer_on_exception"):
        assert name in HOOKS


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_typed_and_has_a_docstring(name):
    fn = getattr(hookspecs, name)
    sig = inspect.signature(fn)
    assert inspect.getdoc(fn), f"{name} has no docstring"
    assert "Args:" in inspect.getdoc(fn)
    for param in sig.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}.{param.name} untyped"
        assert param.default is inspect.Parameter.empty, f"{name}.{param.name} has a default"
    assert sig.return_annotation is not inspect.Signature.empty


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_its_signature_and_an_example(name):
    text = DOC.read_text(encoding="utf-8")
    params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
    heading = f"### `{name}({params})`"
    assert heading in text, f"docs/plugin_hooks.md lacks the heading {heading}"
    section = text.split(heading, 1)[1].split("\n### ", 1)[0]
    assert "```python" in section, f"{name} has no example in docs/plugin_hooks.md"
    assert re.search(rf"def {name}\(", section) or name.startswith("medxfer_register_") and \
        "register(" in section
