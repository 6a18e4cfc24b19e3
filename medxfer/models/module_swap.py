"""Replacing layers of a built network in place, with its layer groups kept in step.

The 2D -> 3D conversions (:mod:`medxfer.models.to_3d`) and batch renormalisation
(:mod:`medxfer.models.batch_renorm`) swap layers of a backbone the plugin has already built
and filled with weights. A backbone's layer groups hold references to its modules (and a
:class:`~medxfer.models.adapt.ParameterGroup` to its parameters), so every swap is also
made in the groups; :func:`swap_layers` does both.
"""

from __future__ import annotations

from typing import Callable, Iterable

from torch import nn

#: ``convert(module)`` returns the module's replacement, or ``None`` to keep it (and look
#: inside it).
Converter = Callable[[nn.Module], "nn.Module | None"]


def swap_layers(root: nn.Module, convert: Converter,
                groups: Iterable[nn.Module] = ()) -> int:
    """Replace, below ``root``, every module ``convert`` gives a replacement for.

    A module used at two places is replaced once and the same replacement put at both.
    Parameters a replacement keeps under the same name (the same object or a new one) are
    swapped in ``groups`` too, so that freezing a group still freezes the new layers.

    Args:
        root: The network to change in place.
        convert: Gives a module's replacement, or ``None`` to keep it.
        groups: Layer groups holding references to modules or parameters of ``root``.

    Returns:
        How many modules were replaced.
    """
    mapping: dict[int, nn.Module] = {}
    params: dict[int, nn.Parameter] = {}
    # the replaced modules and parameters stay referenced until the end: their ids must not
    # be reused by new objects while the mappings are looked up
    replaced: list[object] = []

    def fresh(module: nn.Module) -> nn.Module | None:
        if id(module) in mapping:
            return mapping[id(module)]
        new = convert(module)
        if new is not None:
            mapping[id(module)] = new
            replaced.append(module)
            for name, old_param in module.named_parameters():
                new_param = _parameter(new, name)
                if new_param is not None and new_param is not old_param:
                    params[id(old_param)] = new_param
                    replaced.append(old_param)
        return new

    _replace_below(root, fresh)
    for group in groups:
        _replace_below(group, lambda m: mapping.get(id(m)))
        for module in group.modules():
            for name, param in list(module._parameters.items()):  # noqa: SLF001
                if param is not None and id(param) in params:
                    module._parameters[name] = params[id(param)]  # noqa: SLF001
    return len(mapping)


def _replace_below(module: nn.Module, replacement: Callable[[nn.Module], nn.Module | None],
                   seen: set[int] | None = None) -> None:
    seen = set() if seen is None else seen
    if id(module) in seen:
        return
    seen.add(id(module))
    for name, child in list(module.named_children()):
        new = replacement(child)
        if new is None:
            _replace_below(child, replacement, seen)
        elif new is not child:
            setattr(module, name, new)


def _parameter(module: nn.Module, name: str) -> nn.Parameter | None:
    try:
        return module.get_parameter(name)
    except AttributeError:
        return None
