"""The bundle's ``network_def``: the library class the run's network is, or TorchScript.

A MONAI bundle names its network by class (``{"_target_": "monai.networks.nets.UNet",
...}``) and keeps the weights as a state dict (``models/model.pt``), so that MONAI's tools
(and MONAI Label, MONAI Deploy) build it themselves. medxfer wraps a plugin's network in
its own modules, so the network is a library class only where the wrapper adds nothing
to the forward pass: a segmentation run's :class:`~medxfer.models.SegmentationNetwork`
runs the plugin's network (``.net``) unchanged. Its class and constructor arguments are
found by building the run's network again while recording the arguments that class's
constructor receives; the definition is used only when MONAI builds from it a network
that takes the weights with every key matched and reproduces medxfer's logits. Anything
else (classification and regression networks, with medxfer's head and pooling;
ensembles; test-time flips; domain-specific layers; a network changed after it was
built) falls back to the TorchScript model ``models/model.ts``, and the metadata says why.
"""

from __future__ import annotations

import importlib
import inspect
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from monai.bundle import ConfigParser
from torch import nn

from medxfer.models import SegmentationNetwork
from medxfer.plugins import Registries, build_registries
from medxfer.workflows.export.common import (LogitsModel, OutputCheck, check_outputs,
                                             example_inputs, example_shapes)
from medxfer.workflows.predict import build_run_network

#: Packages whose classes a bundle may name in ``network_def``.
LIBRARIES = ("monai", "torchvision", "segmentation_models_pytorch")
TORCHSCRIPT_DEF = ("$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), "
                   "map_location='cpu')")


@dataclass
class NetworkDefinition:
    """What ``network_def`` is and the weights that go with it.

    Attributes:
        config: The ``network_def`` config item (a ``_target_`` dict or an expression).
        state_dict: The weights for ``models/model.pt``, keyed as ``network_def``'s own.
        target: The class named by ``_target_``, or None for the TorchScript fallback.
        fallback_reason: Why the network is TorchScript (None when ``target`` is set).
        check: How closely the ``_target_`` network reproduced medxfer (None for TorchScript).
    """

    config: dict[str, Any] | str
    state_dict: dict[str, torch.Tensor]
    target: str | None = None
    fallback_reason: str | None = None
    check: OutputCheck | None = None

    def describe(self) -> dict[str, Any]:
        """The metadata's account of the network (``medxfer.network``)."""
        if self.target is not None:
            return {"definition": "_target_", "target": self.target,
                    "weights": "models/model.pt (state dict of network_def)"}
        return {"definition": "torchscript", "fallback_reason": self.fallback_reason,
                "weights": "models/model.pt (state dict of the TorchScript module)"}


def torchscript_definition(traced: torch.jit.ScriptModule, reason: str) -> NetworkDefinition:
    """``network_def`` loading ``models/model.ts``, with the traced module's weights."""
    return NetworkDefinition(TORCHSCRIPT_DEF, _detached(traced.state_dict()),
                             fallback_reason=reason)


def library_definition(loaded: Any, registries: Registries | None = None
                       ) -> NetworkDefinition | str:
    """The ``_target_`` definition of the run's network, or why there is none.

    Args:
        loaded: A run from :func:`medxfer.workflows.predict.load_run`.
        registries: Plugin registries, to build the network again (installed plugins when
            omitted).

    Returns:
        The definition, checked to reproduce medxfer's logits, or the reason (a sentence)
        the network must be exported as TorchScript.
    """
    model = loaded.model
    if not isinstance(model, SegmentationNetwork):
        return (f"the network is medxfer's {type(model).__name__} (a backbone with medxfer's "
                "pooling and task head, or several of them), not one MONAI, torchvision or "
                "segmentation-models-pytorch class")
    net = model.net
    cls = type(net)
    if cls.__module__.split(".")[0] not in LIBRARIES:
        return f"the network's class {cls.__module__}.{cls.__qualname__} is not from " \
               f"{', '.join(LIBRARIES)}"
    with recorded_arguments(cls) as calls:
        build_run_network(loaded.config, loaded.sidecar, registries or build_registries())
    if not calls:
        return f"rebuilding the run's network did not call {cls.__qualname__}(...)"
    kwargs = calls[0]
    if not _plain(kwargs):
        return (f"{cls.__qualname__}'s arguments {sorted(kwargs)} are not all plain values a "
                "config can hold")
    config = {"_target_": public_name(cls), **_as_json(kwargs)}
    return _checked(loaded, config, net)


def _checked(loaded: Any, config: dict[str, Any], net: nn.Module) -> NetworkDefinition | str:
    """The definition if MONAI builds from it a network that takes ``net``'s weights and
    reproduces medxfer's logits, else why not."""
    state = _detached(net.state_dict())
    target = config["_target_"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI's warning that configs run code
            built = ConfigParser({"network_def": config}).get_parsed_content("network_def")
        keys = built.load_state_dict(state, strict=False)
    except Exception as exc:  # MONAI and torch raise many types for a config that does not fit
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if "size mismatch" in line), lines[0] if lines
                      else type(exc).__name__)
        return f"{target} built from the recorded arguments does not take the run's " \
               f"weights ({detail})"
    # a key missing from the run's weights is fine when it names a tensor another key
    # filled: the library class registers a module twice (DynUNet), the plugin once
    live = built.state_dict(keep_vars=True)
    filled = {id(live[k]) for k in state if k in live}
    missing = [k for k in keys.missing_keys if id(live[k]) not in filled]
    if missing or keys.unexpected_keys:
        return (f"{target} built from the recorded arguments does not take the run's weights "
                f"({len(missing)} of its keys missing from them, e.g. {missing[:2]}; "
                f"{len(keys.unexpected_keys)} of theirs unknown to it, e.g. "
                f"{keys.unexpected_keys[:2]}): the plugin changed the network after "
                "building it")
    state = _detached(built.state_dict())  # with the class's own aliases: a strict load
    built.eval()
    inputs = example_inputs(example_shapes(loaded))
    try:
        check = check_outputs(LogitsModel(loaded.model).eval(), built, inputs, "monai-bundle")
    except Exception as exc:  # ExportError, or a shape the library class refuses
        return f"{target} does not reproduce medxfer's logits ({exc})"
    return NetworkDefinition(config, state, target=target, check=check)


@contextmanager
def recorded_arguments(cls: type) -> Iterator[list[dict[str, Any]]]:
    """Record the named arguments of every ``cls(...)`` call inside the block.

    The class's own ``__init__`` is wrapped for the duration and restored after, also when
    the class inherits its constructor.
    """
    calls: list[dict[str, Any]] = []
    own = "__init__" in cls.__dict__
    original: Callable[..., None] = cls.__init__  # type: ignore[misc]
    signature = inspect.signature(original)

    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        if type(self) is cls:  # not a subclass calling super().__init__
            bound = signature.bind(self, *args, **kwargs)
            named = dict(list(bound.arguments.items())[1:])
            for name, param in signature.parameters.items():
                if param.kind is param.VAR_KEYWORD and name in named:
                    named.update(named.pop(name))
            calls.append(named)
        original(self, *args, **kwargs)

    cls.__init__ = recording  # type: ignore[misc]
    try:
        yield calls
    finally:
        if own:
            cls.__init__ = original  # type: ignore[misc]
        else:
            del cls.__init__


def _plain(value: Any) -> bool:
    """Whether ``value`` is made of what a JSON config holds (no classes, modules, ...)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _as_json(value: Any) -> Any:
    """``value`` with tuples as lists (what a JSON config gives back)."""
    if isinstance(value, dict):
        return {str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    if isinstance(value, str):
        return str(value)  # StrEnum members (MONAI's Act, Norm) as their plain value
    return value


def public_name(cls: type) -> str:
    """The shortest importable dotted name of ``cls`` (``monai.networks.nets.UNet``, not
    ``monai.networks.nets.unet.UNet``)."""
    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        module = ".".join(parts[:end])
        try:
            if getattr(importlib.import_module(module), cls.__name__, None) is cls:
                return f"{module}.{cls.__name__}"
        except ImportError:  # pragma: no cover - a parent of an imported module imports
            continue
    return f"{cls.__module__}.{cls.__qualname__}"


def _detached(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of plain CPU tensors (what ``torch.load(weights_only=True)`` reads);
    tensors under two keys stay one tensor, saved once."""
    return {k: v.detach().cpu() for k, v in state.items()}
