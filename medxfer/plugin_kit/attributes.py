"""The optional attributes of plugin objects: one Protocol and one accessor each.

A strategy, domain-adaptation method or combiner may carry attributes the core reads to
decide what to do (build the backbone without weights, draw no target batches...). Each
is optional: the accessor here reads it, with its default when the object lacks it, and
checks its type, so that the default is written in one place and a wrong value is a
:class:`medxfer.errors.PluginError` naming the plugin. The Protocols say what each
attribute is; ``isinstance(obj, KeepsPretrained)`` tells whether an object declares it.
``docs/plugin_hooks.md`` documents each with the kinds that use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from medxfer.errors import PluginError


@runtime_checkable
class UsesPretrained(Protocol):
    """A strategy that says whether the backbone gets its pretrained weights (default
    ``True``; ``scratch`` sets ``False`` and the core builds the backbone without them)."""

    uses_pretrained: bool


@runtime_checkable
class FreezesBackbone(Protocol):
    """A strategy that keeps the whole backbone frozen for the whole run (default
    ``False``); ``medxfer pretrain`` refuses it, as nothing would be learnt."""

    freezes_backbone: bool


@runtime_checkable
class KeepsPretrained(Protocol):
    """A strategy that keeps some starting weights frozen or pulls towards them (default
    ``False``); ``medxfer run`` then warns when those weights are random."""

    keeps_pretrained: bool


@runtime_checkable
class ChangesTrainableParameters(Protocol):
    """A strategy that makes parameters start or stop training during the run (default
    ``False``; ``gradual_unfreeze`` sets ``True``); ``train.ddp.static_graph`` is refused
    with it, as DDP's static graph assumes the trainable parameters never change."""

    changes_trainable_parameters: bool


@runtime_checkable
class DrawsTargetBatches(Protocol):
    """A domain-adaptation method that says whether the trainer draws a target batch at
    every step (default ``True``); the target loader is in ``ctx.target_loader`` either way."""

    draws_target_batches: bool


@runtime_checkable
class SupportsSpatial(Protocol):
    """A combiner that says whether it combines segmentation outputs ``[E, N, C, *spatial]``
    (default ``True``); ``False`` refuses segmentation runs before any work."""

    supports_spatial: bool


@runtime_checkable
class Describes(Protocol):
    """A plugin object that describes itself (name and options) for ``metrics.json``,
    ``ensemble.json`` and the report."""

    def describe(self) -> dict[str, Any]:
        """The plugin's name and options, JSON-ready."""


@runtime_checkable
class RestoresStructure(Protocol):
    """A domain-adaptation method that changes the network's layers (per-domain batch
    norms) and re-applies the change to a freshly built network, so that ``medxfer
    predict`` can load the saved weights."""

    def restore_structure(self, model: Any) -> None:
        """Give ``model`` the layers the method added during training."""


@runtime_checkable
class FitsOnValidation(Protocol):
    """A combiner that learns from validation data before test outputs are combined."""

    def fit(self, val_outputs: Any, val_targets: Any, member_scores: Any) -> Any:
        """Learn from member outputs on validation data (never test data)."""


@dataclass(frozen=True)
class OptionalFlag:
    """One optional true/false attribute: its default and the Protocol that declares it."""

    default: bool
    protocol: type


#: Every optional flag the core reads, with its default.
OPTIONAL_FLAGS: dict[str, OptionalFlag] = {
    "uses_pretrained": OptionalFlag(True, UsesPretrained),
    "freezes_backbone": OptionalFlag(False, FreezesBackbone),
    "keeps_pretrained": OptionalFlag(False, KeepsPretrained),
    "changes_trainable_parameters": OptionalFlag(False, ChangesTrainableParameters),
    "draws_target_batches": OptionalFlag(True, DrawsTargetBatches),
    "supports_spatial": OptionalFlag(True, SupportsSpatial),
}


def _plugin_label(plugin: object) -> str:
    name = getattr(plugin, "name", None)
    return repr(name) if isinstance(name, str) and name else type(plugin).__name__


def plugin_flag(plugin: object, name: str) -> bool:
    """The optional flag ``name`` of ``plugin`` (one of :data:`OPTIONAL_FLAGS`), or its
    default when the plugin does not set it.

    Raises:
        KeyError: for a name that is not an optional flag (a programming error).
        PluginError: when the plugin sets it to something other than ``True``/``False``.
    """
    flag = OPTIONAL_FLAGS[name]
    value = getattr(plugin, name, flag.default)
    if not isinstance(value, bool):
        raise PluginError(f"plugin object {_plugin_label(plugin)} sets {name} = {value!r}; it "
                          "must be True or False (see docs/plugin_hooks.md); report this to "
                          "the plugin's authors")
    return value


def uses_pretrained(strategy: object) -> bool:
    """Whether ``strategy`` wants the backbone's pretrained weights (default ``True``)."""
    return plugin_flag(strategy, "uses_pretrained")


def freezes_backbone(strategy: object) -> bool:
    """Whether ``strategy`` keeps the whole backbone frozen (default ``False``)."""
    return plugin_flag(strategy, "freezes_backbone")


def keeps_pretrained(strategy: object) -> bool:
    """Whether ``strategy`` keeps or pulls towards starting weights (default ``False``)."""
    return plugin_flag(strategy, "keeps_pretrained")


def changes_trainable_parameters(strategy: object) -> bool:
    """Whether ``strategy`` changes which parameters train during the run (default
    ``False``)."""
    return plugin_flag(strategy, "changes_trainable_parameters")


def draws_target_batches(method: object) -> bool:
    """Whether the trainer draws target batches for ``method`` (default ``True``)."""
    return plugin_flag(method, "draws_target_batches")


def supports_spatial(combiner: object) -> bool:
    """Whether ``combiner`` combines segmentation outputs (default ``True``)."""
    return plugin_flag(combiner, "supports_spatial")


def describe_plugin(plugin: object) -> dict[str, Any] | None:
    """What ``plugin.describe()`` returns, or ``None`` when it has no ``describe``.

    Raises:
        PluginError: when ``describe()`` returns something other than a dict.
    """
    describe = getattr(plugin, "describe", None)
    if not callable(describe):
        return None
    described = describe()
    if not isinstance(described, dict):
        raise PluginError(f"plugin object {_plugin_label(plugin)}: describe() returned "
                          f"{type(described).__name__}, not a dict; report this to the "
                          "plugin's authors")
    return described


def restore_network_structure(method: object, model: Any) -> bool:
    """Call ``method.restore_structure(model)`` when the method has it.

    Returns:
        Whether it was called.
    """
    restore = getattr(method, "restore_structure", None)
    if not callable(restore):
        return False
    restore(model)
    return True


def fit_on_validation(combiner: object, val_outputs: Any, val_targets: Any,
                      member_scores: Any) -> bool:
    """Call ``combiner.fit(val_outputs, val_targets, member_scores)`` when it has ``fit``
    (validation data only, never test data).

    Returns:
        Whether it was called.
    """
    fit = getattr(combiner, "fit", None)
    if not callable(fit):
        return False
    fit(val_outputs, val_targets, member_scores)
    return True
