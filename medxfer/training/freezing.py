"""Freezing, unfreezing and parameter groups: the small steps every transfer strategy uses.

In the spirit of Lightning's ``BaseFinetuning``, freezing is two small, overridable steps:
:func:`freeze` and :func:`unfreeze`. A strategy freezes layer groups in
``medxfer_fit_start`` (before the optimizer exists, so frozen parameters are left out of
it) and unfreezes them later with :func:`unfreeze` plus ``FitContext.add_param_group``.

Normalisation statistics of frozen layers
-----------------------------------------
Setting ``requires_grad = False`` does not freeze a batch-norm layer: in training mode it
still normalises with the statistics of the current batch and updates its running mean and
variance. :func:`freeze` (unless ``train_bn=True``) therefore also puts every
normalisation layer with running statistics into evaluation mode, so that it normalises
with, and keeps, the pretrained statistics.

The trainer calls ``model.train()`` at the start of every epoch (and any code may call it
after a validation pass), which would silently switch those layers back to training mode.
To make the lock independent of who calls ``train()`` and when, :func:`freeze` installs a
forward pre-hook on each such layer that puts it back into evaluation mode right before
its forward pass: whatever ``train()`` did, a frozen layer never runs in training mode.
:func:`keep_frozen_norms_in_eval` applies the same lock eagerly (strategies call it in
``medxfer_epoch_start``) so that ``module.training`` also reads ``False`` between
``model.train()`` and the first forward pass. :func:`unfreeze` removes the lock.

The lock lives on the layer object (a pre-hook and a marker attribute). Code that replaces
normalisation layers after freezing (``SyncBatchNorm.convert_sync_batchnorm``,
domain-specific batch norm) must freeze the new layers again.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

#: Attribute set on a normalisation layer whose statistics are locked by :func:`freeze`.
FROZEN_NORM_ATTR = "_medxfer_frozen_norm_hook"

#: Layer types whose running statistics :func:`freeze` locks (BatchNorm1d/2d/3d, their
#: lazy and synchronised variants, and instance norms that track running statistics).
_NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase,)


def is_norm_with_stats(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer that keeps running statistics."""
    return isinstance(module, _NORM_TYPES) and bool(getattr(module, "track_running_stats", False))


def _eval_before_forward(module: nn.Module, args: Any) -> None:
    # A module-level function (not a closure) so that frozen models deep-copy and pickle.
    if module.training:
        module.train(False)


def freeze(module: nn.Module, *, train_bn: bool = False) -> None:
    """Stop ``module``'s parameters from training.

    Every parameter gets ``requires_grad = False`` and its gradient is dropped. Unless
    ``train_bn`` is true, every normalisation layer with running statistics inside
    ``module`` is also locked in evaluation mode (see the module docstring), so its
    pretrained statistics are used and kept.

    Args:
        module: The module (e.g. one layer group) to freeze; freezing twice is harmless.
        train_bn: Keep normalisation layers in training mode, so their running statistics
            still adapt to the new data while their affine parameters stay frozen.
    """
    for param in module.parameters():
        param.requires_grad_(False)
        param.grad = None
    if train_bn:
        return
    for layer in module.modules():
        if is_norm_with_stats(layer) and getattr(layer, FROZEN_NORM_ATTR, None) is None:
            handle = layer.register_forward_pre_hook(_eval_before_forward)
            setattr(layer, FROZEN_NORM_ATTR, handle)
            layer.train(False)


def unfreeze(module: nn.Module) -> None:
    """Make every parameter of ``module`` trainable and unlock its normalisation layers.

    Unlocked normalisation layers take ``module``'s current training mode.

    Args:
        module: The module to unfreeze.
    """
    for param in module.parameters():
        param.requires_grad_(True)
    for layer in module.modules():
        handle = getattr(layer, FROZEN_NORM_ATTR, None)
        if handle is not None:
            handle.remove()
            setattr(layer, FROZEN_NORM_ATTR, None)
            layer.train(module.training)


def frozen_norm_layers(module: nn.Module) -> list[nn.Module]:
    """The normalisation layers inside ``module`` whose statistics :func:`freeze` locked."""
    return [m for m in module.modules() if getattr(m, FROZEN_NORM_ATTR, None) is not None]


def keep_frozen_norms_in_eval(module: nn.Module) -> int:
    """Put every locked normalisation layer of ``module`` back into evaluation mode.

    Call it after ``model.train()`` (strategies do so in ``medxfer_epoch_start``). The
    forward pre-hook installed by :func:`freeze` does the same before each forward pass,
    so calling this is about ``module.training`` reading correctly, not correctness.

    Returns:
        The number of locked layers.
    """
    layers = frozen_norm_layers(module)
    for layer in layers:
        layer.train(False)
    return len(layers)


def is_frozen(module: nn.Module) -> bool:
    """Whether ``module`` has parameters and none of them trains."""
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def trainable_parameters(module: nn.Module | Iterable[nn.Module]) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` of one module or several, each once, in order.

    Args:
        module: A module or an iterable of modules (e.g. layer groups).

    Returns:
        The trainable parameters; shared parameters appear once.
    """
    modules = [module] if isinstance(module, nn.Module) else list(module)
    seen: set[int] = set()
    params: list[nn.Parameter] = []
    for mod in modules:
        for param in mod.parameters():
            if param.requires_grad and id(param) not in seen:
                seen.add(id(param))
                params.append(param)
    return params


def parameter_group(module: nn.Module | Iterable[nn.Module], *, lr: float, name: str,
                    exclude: Iterable[nn.Parameter] = ()) -> dict[str, Any] | None:
    """One optimizer parameter group of the trainable parameters of ``module``.

    Args:
        module: A module or several modules.
        lr: The group's learning rate.
        name: The group's name (logged by the trainer).
        exclude: Parameters already placed in another group.

    Returns:
        ``{"params": [...], "lr": lr, "name": name}``, or ``None`` when nothing trains.
    """
    skip = {id(p) for p in exclude}
    params = [p for p in trainable_parameters(module) if id(p) not in skip]
    if not params:
        return None
    return {"params": params, "lr": float(lr), "name": name}


def ungrouped_trainable_parameters(model: nn.Module,
                                   groups: Iterable[dict[str, Any]]) -> list[nn.Parameter]:
    """Trainable parameters of ``model`` that are in none of ``groups``.

    A strategy that returns its own parameter groups adds these as an extra group so that
    nothing trainable is left out of the optimizer (e.g. a layer another plugin attached).
    """
    grouped = {id(p) for g in groups for p in g["params"]}
    return [p for p in trainable_parameters(model) if id(p) not in grouped]


def layer_group_name(index: int) -> str:
    """The parameter-group name used for backbone layer group ``index``."""
    return f"backbone.{index}"


def count_parameters(params: Iterable[torch.Tensor]) -> int:
    """Number of scalar values in ``params``."""
    return sum(p.numel() for p in params)
