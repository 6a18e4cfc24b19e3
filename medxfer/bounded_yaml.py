"""YAML read with bounds on its size, its nesting and what its aliases expand to.

PyYAML's safe loader never runs code, but an alias (``*name``) refers to an anchored node
(``&name``), so a document of a few hundred bytes whose anchors nest aliases of each other
stands for billions of values. The loader builds that as shared references in a moment;
whatever walks it afterwards (validation, a copy, writing it out) expands it and runs out
of memory. So the document's node graph is measured before anything is built from it: the
values it expands to and how deep it nests, each refused past a bound with one
:class:`~medxfer.errors.ConfigError`, in milliseconds. Files are refused by size before
they are read.
"""

from __future__ import annotations

from typing import Any

import yaml

from medxfer.errors import ConfigError

#: Bytes a YAML file may hold (a run config is a few KiB).
MAX_BYTES = 256 * 1024
#: Values (every key, item and scalar, each alias counted as what it stands for) a document
#: may expand to (a run config has a few hundred).
MAX_VALUES = 100_000
#: Levels of nesting a document may have (a run config has fewer than ten).
MAX_DEPTH = 64

# libyaml's parser when PyYAML was built with it: faster, and it refuses deep nesting itself
# where the pure-Python one would exhaust the interpreter's stack
_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str, source: str) -> Any:
    """``yaml.safe_load(text)`` for a document within :data:`MAX_VALUES` and
    :data:`MAX_DEPTH`.

    Args:
        text: The YAML document.
        source: What the text is (``"config file 'run.yaml'"``, ``"--set 'a=b'"``), named in
            messages.

    Raises:
        ConfigError: when the document expands to too many values, nests too deeply or
            refers to itself through an alias.
        yaml.YAMLError: when it is not valid YAML (see :func:`describe_yaml_error`).
    """
    loader = _BASE_LOADER(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # the pure-Python parser on deep nesting
            raise _too_deep(source) from None
        if node is None:
            return None
        _check_bounds(node, source)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """What the parser found and where (line and column), without the excerpt of the
    document that PyYAML's own message quotes."""
    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow
        return f"{str(exc).splitlines()[0]} (character {exc.position + 1})"
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    text = exc.problem or ""
    if exc.context:
        text = f"{exc.context}: {text}" if text else exc.context
    mark = exc.problem_mark or exc.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{text or 'invalid YAML'}{where}"


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_bounds(root: yaml.Node, source: str) -> None:
    """Count the values and levels ``root`` expands to, each shared node measured once
    (so the walk is as long as the document, however much it expands).

    Raises:
        ConfigError: past :data:`MAX_VALUES` or :data:`MAX_DEPTH`, or for an alias inside
            the node it refers to (a document that never ends).
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels)
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            parts = [measured[id(child)] for child in _children(node)]
            values = 1 + sum(v for v, _ in parts)
            levels = 1 + max((d for _, d in parts), default=0)
            if values > MAX_VALUES:
                raise ConfigError(
                    f"{source} expands to more than {MAX_VALUES} values (its aliases, *name, "
                    "repeat what their anchors, &name, hold); a run config has a few hundred: "
                    "write the repeated parts out, or anchor fewer of them")
            if levels > MAX_DEPTH:
                raise _too_deep(source)
            measured[key] = (values, levels)
            continue
        if key in measured:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise ConfigError(
                    f"{source}: an alias (*name) refers to a section that contains it, so it "
                    "never ends; refer to another section, or write the part out")
            if id(child) not in measured:
                stack.append((child, False))


def _too_deep(source: str) -> ConfigError:
    return ConfigError(f"{source} nests more than {MAX_DEPTH} levels deep; a run config has "
                       "fewer than ten: is it the right file?")
