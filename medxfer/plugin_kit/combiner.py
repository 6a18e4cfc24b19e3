"""The base of ensemble combiners, with the input and weight checks they share.

Member outputs are class probabilities shaped ``[E, N, C, *spatial]`` (E members, N cases,
C classes, optional spatial axes for segmentation). A torch tensor, a numpy array or a
sequence of per-member arrays is accepted; every result is a torch floating tensor on the
input's device, shaped ``[N, C, *spatial]``, that sums to one over ``C``. Options a user
sets that are wrong raise :class:`medxfer.errors.ConfigError` naming the combiner and the
option; inputs that are not probabilities (a programming error) raise ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Sequence

from medxfer.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: How far member probabilities may stray from [0, 1] and from summing to one.
PROBABILITY_TOLERANCE = 1e-3


def combiner_option_error(combiner: str, option: str, message: str) -> ConfigError:
    """A ConfigError naming the combiner and its option."""
    return ConfigError(f"combiner {combiner!r}, option {option!r}: {message}")


def as_member_probs(outputs: Any, *, combiner: str) -> torch.Tensor:
    """Member outputs as one floating tensor ``[E, N, C, *spatial]``, checked.

    Args:
        outputs: Probabilities: a tensor or array ``[E, N, C, *spatial]``, or a sequence of
            ``E`` tensors/arrays ``[N, C, *spatial]``.
        combiner: The combiner's name, for messages.

    Raises:
        ValueError: for a wrong shape, or values that are not probabilities over ``C``.
    """
    import torch

    if isinstance(outputs, (list, tuple)):
        if not outputs:
            raise ValueError(f"combiner {combiner!r}: no member outputs given")
        probs = torch.stack([_as_tensor(o) for o in outputs])
    else:
        probs = _as_tensor(outputs)
    if probs.ndim < 3:
        raise ValueError(f"combiner {combiner!r}: member outputs must be shaped "
                         f"[E, N, C, *spatial], got {list(probs.shape)}")
    if probs.shape[0] < 1 or probs.shape[2] < 2:
        raise ValueError(f"combiner {combiner!r}: need at least one member and two classes, "
                         f"got outputs shaped {list(probs.shape)}")
    if probs.numel():
        low, high = float(probs.min()), float(probs.max())
        sums = probs.sum(dim=2)
        off = float((sums - 1).abs().max())
        if not (math.isfinite(low) and math.isfinite(high)) or low < -PROBABILITY_TOLERANCE \
                or high > 1 + PROBABILITY_TOLERANCE or off > PROBABILITY_TOLERANCE:
            raise ValueError(
                f"combiner {combiner!r}: member outputs must be probabilities that sum to one "
                f"over the class axis (axis 2); got values in [{low:.4g}, {high:.4g}] with sums "
                f"off by up to {off:.3g} (apply softmax to logits first)")
    return probs


def _as_tensor(value: Any) -> torch.Tensor:
    import numpy as np
    import torch

    tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    if not tensor.is_floating_point() or tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor


def check_weight_option(weights: Any, *, combiner: str) -> list[float] | None:
    """Check a ``weights`` option at construction: non-negative numbers, not all zero.

    Raises:
        ConfigError: naming the combiner and ``weights``.
    """
    if weights is None:
        return None
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise _weights_error(combiner, f"expected a list of numbers, one per member, got "
                                       f"{weights!r}")
    values = []
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w):
            raise _weights_error(combiner, f"expected numbers, got {w!r}")
        if w < 0:
            raise _weights_error(combiner, f"weights must be >= 0, got {w:g}")
        values.append(float(w))
    if not values or sum(values) <= 0:
        raise _weights_error(combiner, "give at least one positive weight")
    return values


def _weights_error(combiner: str, message: str) -> ConfigError:
    return combiner_option_error(combiner, "weights", message)


def member_weights(weights: Any, n_members: int, *, combiner: str,
                   like: torch.Tensor) -> torch.Tensor:
    """Weights ``[E]`` normalised to sum to one, as ``like``'s dtype and device.

    Raises:
        ConfigError: when there is not one weight per member (or the weights are invalid).
    """
    import torch

    if hasattr(weights, "tolist"):  # a tensor or an array
        weights = weights.tolist()
    values = check_weight_option(weights, combiner=combiner) or []
    if len(values) != n_members:
        raise _weights_error(combiner, f"{len(values)} weight(s) given for {n_members} "
                                       "member(s); give one per member")
    w = torch.tensor(values, dtype=like.dtype, device=like.device)
    return w / w.sum()


def normalise(probs: torch.Tensor) -> torch.Tensor:
    """Divide ``[N, C, *spatial]`` by its sum over ``C`` (removes rounding drift)."""
    import torch

    return probs / probs.sum(dim=1, keepdim=True).clamp_min(torch.finfo(probs.dtype).tiny)


class Combiner:
    """Base of ensemble combiners.

    A combiner is made by its factory from the user's options, fitted once on validation
    outputs with :meth:`fit`, then applied with :meth:`combine`. It is also callable as
    ``combiner(outputs, weights=None)`` (the registration hook's contract), where
    ``weights`` overrides any weights of its own.

    Subclasses set :attr:`name`, store their options in :attr:`options` and implement
    :meth:`_combine`; those that learn from validation data override :meth:`fit`.

    Attributes:
        name: The registered name.
        supports_spatial: Whether outputs may have spatial axes (segmentation).
        accepts_weights: Whether ``weights`` may be passed to ``__call__``.
        needs_fit: Whether :meth:`combine` refuses to run before :meth:`fit`.
    """

    name: str = ""
    supports_spatial: bool = True
    accepts_weights: bool = True
    needs_fit: bool = False

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.fitted = False

    def fit(self, val_outputs: Any, val_targets: Any = None,
            member_scores: Sequence[float] | None = None) -> Combiner:
        """Learn from validation data only (a no-op here); returns ``self``.

        Args:
            val_outputs: Member probabilities on validation ``[E, N_val, C, *spatial]``, or
                ``None`` when the caller does not gather them (segmentation).
            val_targets: Validation labels ``[N_val]`` (or label maps), or ``None``.
            member_scores: One validation score per member (higher is better), or ``None``.
        """
        self.fitted = True
        return self

    def combine(self, outputs: Any) -> torch.Tensor:
        """Combine member outputs ``[E, N, C, *spatial]`` into ``[N, C, *spatial]``."""
        return self(outputs)

    def __call__(self, outputs: Any, weights: Sequence[float] | None = None) -> torch.Tensor:
        """Combine member outputs, optionally with explicit per-member ``weights``.

        Raises:
            ConfigError: for weights this combiner does not take, the wrong number of
                weights, or spatial outputs a classification-only combiner cannot combine.
            RuntimeError: when the combiner needs :meth:`fit` and was not fitted.
        """
        probs = as_member_probs(outputs, combiner=self.name)
        if probs.ndim > 3 and not self.supports_spatial:
            raise ConfigError(f"combiner {self.name!r} combines classification outputs "
                              f"[E, N, C] only, got {list(probs.shape)} (segmentation); use "
                              "mean, vote or weighted")
        if weights is not None and not self.accepts_weights:
            raise ConfigError(f"combiner {self.name!r} learns how to combine its members and "
                              "takes no weights")
        if self.needs_fit and not self.fitted:
            raise RuntimeError(f"combiner {self.name!r} must be fitted on validation outputs "
                               "before combine(): call fit(val_outputs, val_targets) first")
        chosen = weights if weights is not None else self.default_weights()
        w = None if chosen is None else member_weights(chosen, probs.shape[0],
                                                       combiner=self.name, like=probs)
        return self._combine(probs, w)

    def default_weights(self) -> Sequence[float] | None:
        """The weights used when ``__call__`` gets none (``None``: all members equal)."""
        return self.options.get("weights")

    def _combine(self, probs: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """The combiner's name and options (plus what it learnt), JSON-ready."""
        return {"name": self.name, **self.options}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"
