"""Segmentation metrics: per-case Dice, IoU, HD95 and foreground fractions, summaries, CIs.

Dice, IoU and the 95th-percentile Hausdorff distance come from MONAI (``compute_dice``,
``compute_iou``, ``compute_hausdorff_distance``); this module only one-hot encodes the
label maps, fixes the conventions below and averages.

Every metric is per foreground class (class 0 is background and is never scored). A
class can be missing from the truth, the prediction or both, and small test sets make that
common, so every case gets a finite value:

- **Absent in both** (truth and prediction empty): Dice 1, IoU 1, HD95 0, i.e. perfect
  agreement. The case counts in every mean.
- **Absent in one only** (a false-positive class in an empty truth, or a missed class):
  Dice 0, IoU 0, and HD95 equal to the diagonal of the image's extent in mm
  (``sqrt(sum((size_i * spacing_i) ** 2))``), the largest distance the image allows,
  instead of MONAI's NaN/inf. Summaries stay finite and a missed or hallucinated structure
  is penalised, not dropped.

HD95 is in mm when ``spacing`` is the voxel spacing in mm; with the default spacing of 1 it
is in voxels. Foreground fractions are each class's share of the voxels in the truth and in
the prediction; ``fraction_mae``/``fraction_mse`` are the mean absolute/squared difference
between predicted and true fractions over all cases and foreground classes.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from medxfer.metric_table import metrics_for
from medxfer.metrics import bootstrap_ci

#: The metrics given per foreground class (``CaseMetrics`` fields; ``_pack`` stacks them in
#: this order): the metric table's per-class segmentation metrics.
PER_CLASS_METRICS = metrics_for("segmentation", per_class=True)
#: What :func:`segmentation_summary` returns besides the per-class keys: the table's
#: segmentation metrics but the model's loss.
SUMMARY_KEYS = tuple(name for name in metrics_for("segmentation") if name != "loss")


@dataclass
class CaseMetrics:
    """One case's metrics, one value per foreground class (arrays of length ``C - 1``)."""

    id: str
    class_names: list[str]  # foreground classes, in label order (labels 1..C-1)
    dice: np.ndarray
    iou: np.ndarray
    hd95: np.ndarray
    true_fraction: np.ndarray
    pred_fraction: np.ndarray

    @property
    def mean_dice(self) -> float:
        """Dice averaged over the foreground classes (NaN without foreground classes)."""
        return float(self.dice.mean()) if self.dice.size else math.nan

    def as_row(self) -> dict[str, Any]:
        """``id``, ``dice_mean`` and ``dice_<class>``, ``iou_<class>``, ``hd95_<class>``,
        ``true_fraction_<class>``, ``pred_fraction_<class>`` (class names as in
        :func:`class_key`)."""
        row: dict[str, Any] = {"id": self.id, "dice_mean": self.mean_dice}
        keys = [class_key(name) for name in self.class_names]
        for field in (*PER_CLASS_METRICS, "true_fraction", "pred_fraction"):
            values = getattr(self, field)
            row.update({f"{field}_{key}": float(v) for key, v in zip(keys, values)})
        return row


def class_key(name: str) -> str:
    """A class name as it appears in metric keys: runs of characters other than letters,
    digits, ``-`` and ``_`` become ``_`` (``"left kidney"`` gives ``dice_left_kidney``)."""
    return re.sub(r"[^0-9A-Za-z_-]+", "_", str(name)).strip("_") or "class"


def foreground_names(num_classes: int, class_names: Sequence[str] | None = None) -> list[str]:
    """The names of classes ``1..num_classes-1`` (``"1"``, ``"2"``, ... when not given).

    Raises:
        ValueError: when ``class_names`` does not have ``num_classes`` entries, or two
            foreground names give the same metric key.
    """
    if num_classes < 2:
        raise ValueError(f"segmentation needs at least 2 classes (background + 1), "
                         f"got num_classes={num_classes}")
    names = [str(c) for c in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    fg = [str(n) for n in names[1:]]
    keys = [class_key(n) for n in fg]
    if len(set(keys)) != len(keys):
        raise ValueError(f"class names {fg} give duplicate metric keys {keys}; rename them")
    return fg


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> list[float]:
    if spacing is None:
        return [1.0] * ndim
    values = [float(spacing)] if np.ndim(spacing) == 0 else [float(s) for s in spacing]
    if len(values) == 1:
        values *= ndim
    if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing {values} must be {ndim} positive numbers (one per axis) "
                         f"for {ndim}D label maps")
    return values


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[N, *spatial]`` integer labels as one-hot ``[N, C, *spatial]`` (bool: a quarter of
    float32's memory; MONAI's metrics count it the same)."""
    from monai.networks.utils import one_hot

    return one_hot(labels[:, None].long(), num_classes, dtype=torch.bool)


def case_metrics(pred: Any, true: Any, num_classes: int,
                 class_names: Sequence[str] | None = None, *,
                 spacing: float | Sequence[float] | None = None,
                 case_id: str = "") -> CaseMetrics:
    """Dice, IoU, HD95 and foreground fractions of one case, per foreground class.

    Args:
        pred: Predicted label map, integers ``[*spatial]`` (2D or 3D; numpy or torch).
        true: True label map, same shape.
        num_classes: Number of classes ``C`` including background 0.
        class_names: The ``C`` class names (default ``"0"``, ``"1"``, ...).
        spacing: Voxel spacing in mm: one number or one per axis (default 1).
        case_id: Identifier stored with the values.

    Returns:
        A :class:`CaseMetrics`; edge cases as in the module docstring (always finite).

    Raises:
        ValueError: when the shapes differ, a label lies outside ``[0, C)`` or the spacing
            does not fit.
    """
    names = foreground_names(num_classes, class_names)
    p = torch.as_tensor(np.asarray(pred)).long()
    t = torch.as_tensor(np.asarray(true)).long()
    if p.shape != t.shape:
        raise ValueError(f"case {case_id!r}: prediction {list(p.shape)} and truth "
                         f"{list(t.shape)} differ in shape")
    for what, x in (("prediction", p), ("truth", t)):
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= num_classes):
            raise ValueError(f"case {case_id!r}: {what} labels must lie in [0, {num_classes}), "
                             f"got {int(x.min())}..{int(x.max())}")
    sp = _spacing(spacing, p.ndim)
    k = num_classes - 1
    if p.numel() == 0:
        nan = np.full(k, np.nan)
        return CaseMetrics(case_id, names, nan, nan, nan, nan, nan)
    from monai.metrics import compute_dice, compute_iou

    p1, t1 = _one_hot(p[None], num_classes), _one_hot(t[None], num_classes)
    # ignore_empty=False: an empty truth gives 1 when the prediction is empty too, else 0.
    dice = _float32_digits(compute_dice(p1, t1, include_background=False, ignore_empty=False)[0])
    iou = _float32_digits(compute_iou(p1, t1, include_background=False, ignore_empty=False)[0])
    in_pred = p1[0, 1:].flatten(1).any(dim=1)
    in_true = t1[0, 1:].flatten(1).any(dim=1)
    diagonal = math.sqrt(sum((n * s) ** 2 for n, s in zip(p.shape, sp)))
    hd95 = np.where(in_pred.numpy() == in_true.numpy(), 0.0, diagonal)
    both = torch.nonzero(in_pred & in_true).flatten()
    if both.numel():
        from monai.metrics import compute_hausdorff_distance

        channels = both + 1
        with warnings.catch_warnings():
            # MONAI's own deprecation notice from inside compute_hausdorff_distance.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
            values = compute_hausdorff_distance(p1[:, channels], t1[:, channels],
                                                include_background=True, percentile=95,
                                                spacing=sp)[0]
        hd95[both.numpy()] = _float32_digits(values)
    voxels = float(t.numel())
    true_fraction = t1[0, 1:].flatten(1).sum(dim=1).double().numpy() / voxels
    pred_fraction = p1[0, 1:].flatten(1).sum(dim=1).double().numpy() / voxels
    return CaseMetrics(case_id, names, dice, iou, hd95.astype(np.float64),
                       true_fraction, pred_fraction)


def _float32_digits(values: torch.Tensor) -> np.ndarray:
    """MONAI's float32 results as float64 with float32's significant digits (2/3 reads
    0.6666667, not 0.6666666865348816)."""
    if values.dtype != torch.float32:
        return values.double().cpu().numpy()
    return np.array([float(str(v)) for v in values.cpu().numpy()], dtype=np.float64)


def _pack(cases: Sequence[CaseMetrics]) -> np.ndarray:
    """Per-case values as ``[N, 5, K]``: dice, iou, hd95, true and predicted fraction."""
    return np.stack([np.stack([c.dice, c.iou, c.hd95, c.true_fraction, c.pred_fraction])
                     for c in cases]).astype(np.float64)


def _summary_from_packed(packed: np.ndarray, keys: Sequence[str]) -> dict[str, float]:
    n = packed.shape[0]
    out: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # mean of nothing is NaN
        for index, metric in enumerate(PER_CLASS_METRICS):
            per_class = np.nanmean(packed[:, index], axis=0) if n else np.full(len(keys), np.nan)
            out[metric] = float(np.mean(per_class)) if len(keys) else math.nan
            out.update({f"{metric}_{key}": float(v) for key, v in zip(keys, per_class)})
        error = packed[:, 4] - packed[:, 3]
        out["fraction_mae"] = float(np.nanmean(np.abs(error))) if error.size else math.nan
        out["fraction_mse"] = float(np.nanmean(error ** 2)) if error.size else math.nan
    out["n"] = n
    return out


def segmentation_summary(cases: Sequence[CaseMetrics]) -> dict[str, float]:
    """Means over cases, per foreground class and over the foreground classes.

    Args:
        cases: Per-case values from :func:`case_metrics` (same classes in all).

    Returns:
        ``dice``, ``iou``, ``hd95`` (the mean over foreground classes of the per-class means
        over cases), ``dice_<class>``, ``iou_<class>``, ``hd95_<class>`` (see
        :func:`class_key`), ``fraction_mae``, ``fraction_mse`` (over all cases and
        foreground classes) and ``n`` (cases). NaN when there are no cases.
    """
    keys = _keys(cases)
    packed = _pack(cases) if cases else np.zeros((0, 5, len(keys)))
    return _summary_from_packed(packed, keys)


def segmentation_ci(cases: Sequence[CaseMetrics], *, n_boot: int, seed: int,
                    alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals over cases for every :func:`segmentation_summary` key.

    Cases are resampled with :func:`medxfer.metrics.bootstrap_ci` (same generator, seed and
    percentile rule as the classification intervals).

    Args:
        cases: Per-case values from :func:`case_metrics`.
        n_boot: Number of resamples (0 gives an empty dict).
        seed: Seed of the resampling.
        alpha: 1 - confidence level.

    Returns:
        ``{metric: (low, high)}`` without ``n``.
    """
    if not cases or n_boot <= 0:
        return {}
    keys = _keys(cases)
    packed = _pack(cases)
    return bootstrap_ci(np.zeros(len(cases)), packed,
                        lambda _, sample: _summary_from_packed(sample, keys),
                        n_boot=n_boot, seed=seed, alpha=alpha)


def _keys(cases: Sequence[CaseMetrics]) -> list[str]:
    if not cases:
        return []
    names = cases[0].class_names
    if any(c.class_names != names for c in cases):
        raise ValueError("cases were scored with different class names")
    return [class_key(n) for n in names]


def representative_cases(cases: Sequence[CaseMetrics]) -> dict[str, int]:
    """Indices of the best, median and worst case by mean foreground Dice.

    Ties go to the earlier case; the median is the lower median of the sorted order.
    Returns ``{"best": i, "median": j, "worst": k}`` (empty for no cases); with fewer than
    three cases some indices coincide.
    """
    if not cases:
        return {}
    scores = np.array([c.mean_dice for c in cases])
    scores = np.where(np.isnan(scores), -np.inf, scores)
    order = np.argsort(-scores, kind="stable")  # best first
    return {"best": int(order[0]), "median": int(order[(len(order) - 1) // 2]),
            "worst": int(order[-1])}


# ---------------------------------------------------------------------------------------
# per-epoch validation
# ---------------------------------------------------------------------------------------


def foreground_dice(probs: torch.Tensor, labels: torch.Tensor,
                    num_classes: int | None = None) -> torch.Tensor:
    """Mean foreground Dice of each case in a batch, with :func:`case_metrics`' conventions.

    Args:
        probs: Probabilities or logits ``[N, C, *spatial]`` (the argmax is the prediction).
        labels: True labels ``[N, 1, *spatial]`` or ``[N, *spatial]``.
        num_classes: ``C`` (default ``probs.shape[1]``).

    Returns:
        ``[N]`` float tensor on the CPU: Dice averaged over classes ``1..C-1`` (a class
        absent from truth and prediction counts 1, absent from one of them 0).
    """
    from monai.metrics import compute_dice

    c = int(num_classes or probs.shape[1])
    if labels.ndim == probs.ndim:
        labels = labels[:, 0]
    pred = _one_hot(probs.argmax(dim=1), c)
    true = _one_hot(labels.to(pred.device), c)
    dice = compute_dice(pred, true, include_background=False, ignore_empty=False)
    return dice.float().mean(dim=1).cpu()


def mean_foreground_dice(probs: torch.Tensor, labels: torch.Tensor,
                         num_classes: int | None = None) -> float:
    """:func:`foreground_dice` averaged over the batch (a float; NaN for an empty batch)."""
    values = foreground_dice(probs, labels, num_classes)
    return float(values.mean()) if values.numel() else math.nan

