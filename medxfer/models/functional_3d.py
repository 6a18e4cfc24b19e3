"""2D-only functions a network calls in its ``forward``, given their 3D meaning while a
converted (``acs`` or ``i3d``) network runs on volumes.

Layers are converted by :mod:`medxfer.models.layers_3d`; what a ``forward`` calls
directly (torchvision's MobileNet-V2 pools with ``adaptive_avg_pool2d``, Inception with
``max_pool2d``, timm with a mean over axes ``(2, 3)``) is caught by :class:`Functional3d`,
a torch function mode, and only for 5D tensors.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from medxfer.models.layers_3d import avg_pool_3d, cube_size, triple


def _adaptive_pool(pool3d: Callable[..., Any]) -> Callable[..., Any]:
    def handler(x: torch.Tensor, output_size: Any, *args: Any, **kwargs: Any) -> Any:
        return pool3d(x, cube_size(output_size), *args, **kwargs)
    return handler


def _max_pool(x: torch.Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
              dilation: Any = 1, ceil_mode: bool = False, return_indices: bool = False) -> Any:
    stride = kernel_size if stride is None or stride == [] else stride
    return F.max_pool3d(x, triple(kernel_size), triple(stride), triple(padding),
                        triple(dilation), ceil_mode=ceil_mode, return_indices=return_indices)


def _avg_pool_handler(replicate_depth: bool) -> Callable[..., Any]:
    def handler(x: torch.Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
                ceil_mode: bool = False, count_include_pad: bool = True,
                divisor_override: int | None = None) -> Any:
        stride = kernel_size if stride is None or stride == [] else stride
        return avg_pool_3d(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                           divisor_override, replicate_depth=replicate_depth)
    return handler


def _interpolate(x: torch.Tensor, size: Any = None, scale_factor: Any = None,
                 mode: str = "nearest", align_corners: bool | None = None,
                 *args: Any, **kwargs: Any) -> Any:
    if mode in ("bilinear", "bicubic"):
        mode = "trilinear"
    if isinstance(size, (tuple, list, torch.Size)) and len(size) == 2:
        size = cube_size(tuple(size))
    if isinstance(scale_factor, (tuple, list)) and len(scale_factor) == 2:
        scale_factor = cube_size(tuple(scale_factor))
    return F.interpolate(x, size, scale_factor, mode, align_corners, *args, **kwargs)


_PLANE_AXES = ({2, 3}, {-2, -1})


def _reduce_plane(reduce: Callable[..., Any]) -> Callable[..., Any]:
    """A mean (or max) over the two spatial axes of a 2D map becomes one over all three."""

    def handler(x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        dims = kwargs.get("dim", args[0] if args else None)
        if isinstance(dims, (tuple, list)) and set(dims) in _PLANE_AXES:
            if "dim" in kwargs:
                kwargs["dim"] = (2, 3, 4)
            else:
                args = ((2, 3, 4), *args[1:])
        return reduce(x, *args, **kwargs)

    return handler


def _functional_handlers(method: str) -> dict[Any, Callable[..., Any]]:
    return {
        F.adaptive_avg_pool2d: _adaptive_pool(F.adaptive_avg_pool3d),
        F.adaptive_max_pool2d: _adaptive_pool(F.adaptive_max_pool3d),
        F.max_pool2d: _max_pool,
        F.avg_pool2d: _avg_pool_handler(replicate_depth=method == "i3d"),
        F.dropout2d: F.dropout3d,
        F.interpolate: _interpolate,
        torch.Tensor.mean: _reduce_plane(torch.Tensor.mean),
        torch.mean: _reduce_plane(torch.mean),
        torch.Tensor.amax: _reduce_plane(torch.Tensor.amax),
        torch.amax: _reduce_plane(torch.amax),
    }


_ACTIVE = threading.local()


class Functional3d(TorchFunctionMode):
    """While active, 2D-only functions called on 5D tensors act in 3D.

    ``adaptive_avg_pool2d(x, (1, 1))`` becomes a global 3D average, ``max_pool2d`` and
    ``avg_pool2d`` cubic 3D pooling (``i3d``: depth padded by repeating the edge slices),
    ``interpolate`` in ``bilinear`` mode ``trilinear``, and a mean or max over axes
    ``(2, 3)`` one over ``(2, 3, 4)``. Calls on tensors of other ranks are untouched.
    """

    def __init__(self, method: str) -> None:
        super().__init__()
        self.handlers = _functional_handlers(method)

    def __enter__(self) -> Functional3d:
        _ACTIVE.depth = getattr(_ACTIVE, "depth", 0) + 1
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        _ACTIVE.depth -= 1
        super().__exit__(*exc)

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        handler = self.handlers.get(func)
        if handler is not None and args and isinstance(args[0], torch.Tensor) \
                and args[0].ndim == 5:
            return handler(*args, **kwargs)
        return func(*args, **kwargs)


def functional_3d_active() -> bool:
    """Whether a :class:`Functional3d` is active in this thread."""
    return getattr(_ACTIVE, "depth", 0) > 0


def run_in_3d(method: str, call: Callable[[], Any]) -> Any:
    """``call()`` with :class:`Functional3d` active (once: nested calls reuse it)."""
    if functional_3d_active():
        return call()
    with Functional3d(method):
        return call()


_IN_3D_CLASSES: dict[tuple[type, str], type] = {}


def forward_in_3d(module: nn.Module, method: str) -> None:
    """Make ``module``'s own ``forward`` run with :class:`Functional3d`, in place.

    For networks whose ``forward`` the core calls directly (a converted segmentation
    network and its encoder): the module's class becomes a subclass (one per class and
    method, made once) whose ``forward`` wraps the original, so parameter names, hooks and
    the module itself stay as they were.
    """
    base = type(module)
    if getattr(base, "medxfer_to_3d", None) is not None:
        return
    cls = _IN_3D_CLASSES.get((base, method))
    if cls is None:
        def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
            return run_in_3d(method, lambda: base.forward(self, *args, **kwargs))

        cls = type(f"{base.__name__}In3d", (base,),
                   {"forward": forward, "medxfer_to_3d": method, "__module__": base.__module__,
                    "__doc__": f"{base.__name__} run on volumes (to_3d: {method})."})
        _IN_3D_CLASSES[(base, method)] = cls
    module.__class__ = cls
