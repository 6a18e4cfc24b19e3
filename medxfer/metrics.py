"""Evaluation metrics, decision thresholds and bootstrap confidence intervals.

The numbers come from torchmetrics and scikit-learn; this module only picks the right
call, formats inputs and handles the degenerate cases a small medical test set produces:

- A metric that is undefined on the data is ``nan``, never an exception: ``auc`` when
  ``y_true`` holds a single class, ``r2`` when the targets are constant.
- ``precision``/``recall``/``f1`` with an empty denominator are 0 (torchmetrics' and
  scikit-learn's ``zero_division=0``).
- Multi-class macro averages (``precision``, ``recall``, ``specificity``, ``f1``) leave out
  a class absent from both labels and predictions (torchmetrics' convention);
  ``balanced_accuracy`` is the mean recall over the classes present in ``y_true``
  (scikit-learn's convention); ``auc`` is the macro one-vs-rest AUC over the classes that
  have both positive and negative cases.

Classification values come from torchmetrics in float32 (about 7 significant digits).
Classification metrics are computed for a whole batch of resamples in one call, which is
what makes :func:`bootstrap_ci` fast; a single evaluation is a batch of one.
"""

from __future__ import annotations

import difflib
import functools
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from sklearn import metrics as skm

from medxfer.errors import ConfigError

# The metric table lives in its own module; it is re-exported here, where callers look.
from medxfer.metric_table import (  # noqa: F401
    COLUMNS,
    METRICS,
    TASKS,
    Metric,
    bounds,
    default_monitor,
    label,
    lower_is_better,
    metric,
    metrics_for,
    short_label,
    sort_key,
)

ArrayLike = Any
MetricFn = Callable[[np.ndarray, np.ndarray], Mapping[str, float]]

THRESHOLD_METHODS = ("val_youden", "val_f1", "val_accuracy", "val_accuracy_1se")
#: What the per-epoch validation of a run computes, by task (``history`` keys without
#: ``val_``): the choices of ``train.early_stopping.metric``.
VALIDATION_METRICS = {task: metrics_for(task, validation=True) for task in TASKS}
#: What :func:`classification_metrics` returns: the classification validation metrics
#: (the validation adds the model's loss itself) and the number of cases.
CLASSIFICATION_KEYS = (*(name for name in VALIDATION_METRICS["classification"]
                         if name != "loss"), "n")
# Elements (resamples x cases x classes) per batch in bootstrap_ci. Kept below torch's
# intra-op grain size (32768) so the many small ops run single-threaded: threads gain
# nothing at this size and cost a tenfold slowdown on an oversubscribed CPU.
_BATCH_ELEMENTS = 32_768


# ---------------------------------------------------------------------------------------
# classification
# ---------------------------------------------------------------------------------------


def classification_metrics(y_true: ArrayLike, probs: ArrayLike, *,
                           threshold: float | None = None) -> dict[str, float]:
    """Accuracy, balanced accuracy, precision, recall, specificity, F1 and ROC AUC.

    Args:
        y_true: Integer labels, shape ``[N]``.
        probs: Class probabilities (softmax), shape ``[N, C]``; ``C == 2`` for binary.
        threshold: Binary only: a case is predicted positive when ``probs[:, 1] >=
            threshold`` (default 0.5). Ignored for multi-class, which predicts the argmax.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``precision``, ``recall`` (sensitivity),
        ``specificity``, ``f1``, ``auc`` and ``n`` (number of cases). For binary tasks the
        positive class is class 1; for multi-class the first four are macro averages and
        ``auc`` is the macro one-vs-rest AUC. Undefined values are ``nan`` (see the module
        docstring), e.g. ``auc`` when only one class occurs in ``y_true``.

    Raises:
        ValueError: when the shapes disagree or a label is outside ``[0, C)``.
    """
    y, p = _check_classification(y_true, probs)
    batch = _classification_batch(y[None], p[None], threshold)
    # torchmetrics computes in float32: keep its significant digits, not float64 noise.
    return {key: (int(val[0]) if key == "n" else float(str(np.float32(val[0]))))
            for key, val in batch.items()}


def predict_labels(probs: ArrayLike, threshold: float | None = None) -> np.ndarray:
    """Labels from probabilities: ``probs[..., 1] >= threshold`` for binary, else argmax.

    Args:
        probs: Class probabilities, shape ``[..., C]``.
        threshold: Binary decision threshold (default 0.5); ignored when ``C > 2``.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.shape[-1] == 2:
        return (p[..., 1] >= (0.5 if threshold is None else threshold)).astype(np.int64)
    return p.argmax(axis=-1).astype(np.int64)


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> list[list[int]]:
    """Counts with true classes as rows and predicted classes as columns.

    Args:
        y_true: Integer labels, shape ``[N]``.
        y_pred: Integer predictions, shape ``[N]``.
        num_classes: Number of classes ``C``; the matrix is ``C x C`` even when a class
            never occurs.

    Returns:
        A nested list of plain ``int`` (JSON-ready).
    """
    y = np.asarray(y_true).astype(np.int64).ravel()
    pred = np.asarray(y_pred).astype(np.int64).ravel()
    if y.shape != pred.shape:
        raise ValueError(f"y_true has {y.size} cases but y_pred has {pred.size}")
    cm = skm.confusion_matrix(y, pred, labels=list(range(num_classes)))
    return [[int(v) for v in row] for row in cm]


def accuracy_standard_error(accuracy: float, n: int) -> float:
    """The binomial standard error of an accuracy measured on ``n`` cases, at least one
    case's worth (``1 / n``), so that a perfect score still has a margin."""
    return max(math.sqrt(accuracy * (1.0 - accuracy) / n), 1.0 / n) if n else 0.0


def choose_threshold(y_true: ArrayLike, probs: ArrayLike, method: str) -> float:
    """Choose a binary decision threshold on validation data (never on test data).

    Args:
        y_true: Binary labels, shape ``[N]``.
        probs: Probabilities ``[N, 2]`` (or the positive-class probability ``[N]``).
        method: ``"val_youden"`` maximises sensitivity + specificity - 1 over the ROC
            curve; ``"val_f1"`` maximises F1; ``"val_accuracy"`` maximises accuracy (of
            the thresholds that tie, the one nearest 0.5); ``"val_accuracy_1se"`` takes,
            of the thresholds whose accuracy is within one standard error of the best
            (:func:`accuracy_standard_error`), the one nearest 0.5: a threshold that a few
            validation cases cannot move far. A fixed threshold is the caller's business.

    Returns:
        A threshold in ``[0, 1]``, used as ``probs[:, 1] >= threshold``. It is the score of
        a validation case (the ROC/PR curve vertex); ties go to the highest threshold. When
        ``y_true`` holds a single class the curve is undefined and 0.5 is returned with a
        warning.

    Raises:
        ValueError: for an unknown method or non-binary input.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"unknown threshold method {method!r}; choose one of "
                         f"{', '.join(THRESHOLD_METHODS)} (or 'fixed', handled by the caller)")
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2:
        if p.shape[1] != 2:
            raise ValueError(f"choose_threshold is for binary tasks; probs has "
                             f"{p.shape[1]} classes")
        p = p[:, 1]
    if p.shape != y.shape:
        raise ValueError(f"y_true has {y.size} cases but probs has {p.shape[0]}")
    if np.unique(y).size < 2:
        warnings.warn("choose_threshold: validation labels hold a single class; using 0.5",
                      stacklevel=2)
        return 0.5
    if method in ("val_accuracy", "val_accuracy_1se"):
        candidates = np.unique(np.concatenate([p, [0.5]]))
        accuracy = np.array([np.mean((p >= t) == (y == 1)) for t in candidates])
        floor = accuracy.max()
        if method == "val_accuracy_1se":
            floor -= accuracy_standard_error(float(floor), y.size)
        best = candidates[accuracy >= floor - 1e-12]
        return float(best[np.argmin(np.abs(best - 0.5))])
    if method == "val_youden":
        fpr, tpr, thresholds = skm.roc_curve(y, p, drop_intermediate=False)
        score = tpr - fpr
    else:
        precision, recall, thresholds = skm.precision_recall_curve(y, p)
        precision, recall = precision[:-1], recall[:-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(precision + recall > 0,
                             2 * precision * recall / (precision + recall), 0.0)
    best = np.flatnonzero(score == np.nanmax(score))
    # roc_curve lists thresholds in decreasing order, precision_recall_curve increasing.
    chosen = thresholds[best].max()
    return float(min(max(chosen, 0.0), 1.0))


def _check_classification(y_true: ArrayLike, probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(np.int64).ravel()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape [N, C] with C >= 2, got {list(p.shape)}")
    if p.shape[0] != y.size:
        raise ValueError(f"y_true has {y.size} cases but probs has {p.shape[0]}")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in [0, {p.shape[1]}), got {y.min()}..{y.max()}")
    return y, p


def _classification_batch(y: np.ndarray, p: np.ndarray,
                          threshold: float | None) -> dict[str, np.ndarray]:
    """Metrics for ``B`` resamples at once: ``y`` is ``[B, N]``, ``p`` is ``[B, N, C]``."""
    num_classes = p.shape[-1]
    n_batch, n = y.shape
    if n == 0:
        return {k: np.full(n_batch, 0.0 if k == "n" else np.nan) for k in CLASSIFICATION_KEYS}
    # Imported here: torchmetrics takes seconds to import, select_monitor_metric and
    # regression_metrics do not need it.
    import torch
    from torchmetrics.functional import classification as tmc

    target = torch.from_numpy(y)
    pred = torch.from_numpy(predict_labels(p, threshold))
    kw: dict[str, Any] = {"multidim_average": "samplewise", "validate_args": False}
    mc = dict(kw, num_classes=num_classes)

    def per_resample(fn: Callable[..., torch.Tensor], **extra: Any) -> np.ndarray:
        # samplewise results drop the batch axis for a batch of one: restore it.
        values = fn(pred, target, **extra).numpy()
        per_class = extra.get("average") == "none"
        return values.reshape(n_batch, num_classes) if per_class else values.reshape(n_batch)

    present = np.stack([(y == c).any(axis=1) for c in range(num_classes)], axis=1)
    if num_classes == 2:
        out = {
            "accuracy": per_resample(tmc.binary_accuracy, **kw),
            "precision": per_resample(tmc.binary_precision, **kw),
            "recall": per_resample(tmc.binary_recall, **kw),
            "specificity": per_resample(tmc.binary_specificity, **kw),
            "f1": per_resample(tmc.binary_f1_score, **kw),
        }
        per_class_recall = np.stack([out["specificity"], out["recall"]], axis=1)
    else:
        out = {
            "accuracy": per_resample(tmc.multiclass_accuracy, average="micro", **mc),
            "precision": per_resample(tmc.multiclass_precision, average="macro", **mc),
            "recall": per_resample(tmc.multiclass_recall, average="macro", **mc),
            "specificity": per_resample(tmc.multiclass_specificity, average="macro", **mc),
            "f1": per_resample(tmc.multiclass_f1_score, average="macro", **mc),
        }
        per_class_recall = per_resample(tmc.multiclass_recall, average="none", **mc)
    per_class_recall = np.where(present, per_class_recall, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan rows cannot occur for n > 0
        out["balanced_accuracy"] = np.nanmean(per_class_recall, axis=1)
    out["auc"] = np.array([_auc(y[b], p[b], present[b]) for b in range(n_batch)])
    out["n"] = np.full(n_batch, n)
    return {key: out[key].astype(np.float64) for key in CLASSIFICATION_KEYS}


def _auc(y: np.ndarray, p: np.ndarray, present: np.ndarray) -> float:
    """Binary ROC AUC, or macro one-vs-rest AUC over classes with both outcomes present."""
    if present.sum() < 2:
        return math.nan
    import torch
    from torchmetrics.functional import classification as tmc

    target = torch.from_numpy(y)
    if p.shape[1] == 2:
        return float(tmc.binary_auroc(torch.from_numpy(p[:, 1]), target, validate_args=False))
    # A class absent from y has no positives: leave it out (its OvR AUC is undefined).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchmetrics: "No positive samples"
        per_class = tmc.multiclass_auroc(torch.from_numpy(p), target, num_classes=p.shape[1],
                                         average="none", validate_args=False).numpy()
    return float(per_class[present].mean())


# ---------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------


def expected_calibration_error(y_true: ArrayLike, probs: ArrayLike, n_bins: int = 15) -> float:
    """Expected calibration error of the top-label confidence (torchmetrics).

    Cases are put in ``n_bins`` equal-width bins of their highest class probability;
    ECE is the case-weighted mean over bins of ``|accuracy - mean confidence|``, where a
    case is correct when its argmax is its label. This is torchmetrics'
    ``multiclass_calibration_error`` (``norm="l1"``), used for binary tasks too (as
    ``C = 2``), so it ignores any tuned decision threshold.

    Args:
        y_true: Integer labels, shape ``[N]``.
        probs: Class probabilities, shape ``[N, C]``.
        n_bins: Number of confidence bins.

    Returns:
        ECE in ``[0, 1]`` (0 is perfectly calibrated); ``nan`` when N = 0.

    Raises:
        ValueError: when the shapes disagree, a label is outside ``[0, C)`` or
            ``n_bins < 1``.
    """
    y, p = _check_classification(y_true, probs)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if y.size == 0:
        return math.nan
    import torch
    from torchmetrics.functional.classification import multiclass_calibration_error

    value = multiclass_calibration_error(torch.from_numpy(p).float(), torch.from_numpy(y),
                                         num_classes=p.shape[1], n_bins=n_bins, norm="l1",
                                         validate_args=False)
    return float(str(np.float32(value)))


def reliability_bins(y_true: ArrayLike, probs: ArrayLike,
                     n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin accuracy and confidence of the top label, for a reliability diagram.

    Bins are :func:`expected_calibration_error`'s: ``n_bins`` equal-width intervals
    ``[lo, hi)`` of the highest class probability (a confidence of exactly 1 falls in the
    last bin).

    Args:
        y_true: Integer labels, shape ``[N]``.
        probs: Class probabilities, shape ``[N, C]``.
        n_bins: Number of bins.

    Returns:
        ``edges`` (``n_bins + 1``), and per bin ``count``, ``accuracy`` and ``confidence``
        (``nan`` for an empty bin).
    """
    y, p = _check_classification(y_true, probs)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    confidence = p.max(axis=1) if y.size else np.zeros(0)
    correct = (p.argmax(axis=1) == y).astype(np.float64) if y.size else np.zeros(0)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
    return {"edges": edges, "count": count.astype(np.int64), "accuracy": accuracy,
            "confidence": mean_conf}


# ---------------------------------------------------------------------------------------
# regression
# ---------------------------------------------------------------------------------------


def regression_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """Mean absolute error, mean squared error, its root, and R².

    Args:
        y_true: Targets, shape ``[N]``.
        y_pred: Predictions, shape ``[N]``.

    Returns:
        ``mae``, ``mse``, ``rmse``, ``r2`` and ``n``. ``r2`` is ``nan`` when the targets
        are constant (fewer than two distinct values); every metric is ``nan`` when N = 0.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    pred = np.asarray(y_pred, dtype=np.float64).ravel()
    if y.shape != pred.shape:
        raise ValueError(f"y_true has {y.size} cases but y_pred has {pred.size}")
    batch = _regression_batch(y[None], pred[None])
    return {key: (int(val[0]) if key == "n" else float(val[0])) for key, val in batch.items()}


def _regression_batch(y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Metrics for ``B`` resamples at once: ``y`` and ``pred`` are ``[B, N]``."""
    n_batch, n = y.shape
    if n == 0:
        nan = np.full(n_batch, np.nan)
        return {"mae": nan, "mse": nan, "rmse": nan, "r2": nan, "n": np.zeros(n_batch)}
    # scikit-learn treats columns as outputs: one column per resample.
    yt, pt = y.T, pred.T
    mse = skm.mean_squared_error(yt, pt, multioutput="raw_values")
    constant = np.ptp(y, axis=1) == 0
    if n >= 2:
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = skm.r2_score(yt, pt, multioutput="raw_values", force_finite=False)
    else:
        r2 = np.full(n_batch, np.nan)
    return {
        "mae": skm.mean_absolute_error(yt, pt, multioutput="raw_values"),
        "mse": mse,
        "rmse": np.sqrt(mse),
        "r2": np.where(constant, np.nan, r2),
        "n": np.full(n_batch, float(n)),
    }


# ---------------------------------------------------------------------------------------
# bootstrap
# ---------------------------------------------------------------------------------------


def bootstrap_ci(y_true: ArrayLike, scores: ArrayLike, metric_fn: MetricFn, *, n_boot: int,
                 seed: int, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals for every metric ``metric_fn`` returns.

    Cases are resampled with replacement ``n_boot`` times from a generator seeded with
    ``seed`` (same inputs and seed, same intervals). A resample where a metric is ``nan``
    (e.g. AUC when a resample holds one class) is skipped for that metric only.

    :func:`classification_metrics` and :func:`regression_metrics`, also wrapped in
    ``functools.partial`` (e.g. to fix ``threshold``), are evaluated for many resamples
    per call, which is fast (1000 resamples of 624 binary cases take well under a
    second); any other callable is called once per resample.

    Args:
        y_true: Labels or targets, shape ``[N]``.
        scores: What ``metric_fn`` takes second: probabilities ``[N, C]`` or predictions
            ``[N]``.
        metric_fn: ``metric_fn(y_true, scores) -> dict[str, float]``.
        n_boot: Number of resamples (0 gives an empty dict).
        seed: Seed of the resampling.
        alpha: 1 - confidence level (0.05 gives 95% intervals).

    Returns:
        ``{metric: (low, high)}``; ``(nan, nan)`` when a metric was never defined. The
        count ``n`` is left out.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    y = np.asarray(y_true)
    s = np.asarray(scores)
    if s.shape[0] != y.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} cases but scores has {s.shape[0]}")
    n = y.shape[0]
    if n_boot <= 0 or n == 0:
        return {}
    rng = np.random.default_rng(seed)
    batched = _batched_form(metric_fn)
    chunks: list[dict[str, np.ndarray]] = []
    per_resample = max(1, n * int(np.prod(s.shape[1:], dtype=np.int64)))
    # Index matrices are drawn per chunk (the same stream as drawing them all at once).
    chunk_size = max(1, (_BATCH_ELEMENTS if batched else 2**24) // per_resample)
    done = 0
    while done < n_boot:
        size = min(chunk_size, n_boot - done)
        idx = rng.integers(0, n, size=(size, n))
        if batched is not None:
            chunks.append(batched(y[idx], s[idx]))
        else:
            rows = [metric_fn(y[i], s[i]) for i in idx]
            keys = rows[0].keys() if rows else ()
            chunks.append({k: np.array([_as_float(r.get(k)) for r in rows]) for k in keys})
        done += size
    values = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0] if k != "n"}
    out: dict[str, tuple[float, float]] = {}
    for key, vals in values.items():
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            out[key] = (math.nan, math.nan)
        else:
            lo, hi = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
            out[key] = (float(lo), float(hi))
    return out


def _batched_form(metric_fn: MetricFn) -> Callable[[np.ndarray, np.ndarray],
                                                  dict[str, np.ndarray]] | None:
    """The many-resamples-per-call equivalent of ``metric_fn``, when there is one."""
    func, kwargs = metric_fn, {}
    if isinstance(metric_fn, functools.partial) and not metric_fn.args:
        func, kwargs = metric_fn.func, dict(metric_fn.keywords)
    if func is classification_metrics and set(kwargs) <= {"threshold"}:
        threshold = kwargs.get("threshold")

        def batched_cls(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
            return _classification_batch(y.astype(np.int64), p.astype(np.float64), threshold)
        return batched_cls
    if func is regression_metrics and not kwargs:
        return lambda y, p: _regression_batch(y.astype(np.float64).reshape(y.shape[0], -1),
                                              p.astype(np.float64).reshape(p.shape[0], -1))
    return None


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ---------------------------------------------------------------------------------------
# monitoring
# ---------------------------------------------------------------------------------------


def select_monitor_metric(task: str, name: str = "auto", *,
                          available: Iterable[str] | None = None) -> tuple[str, str]:
    """The validation metric that picks the best checkpoint, and whether to maximise it.

    ``auto`` picks by task: classification ``auc`` (binary ROC AUC, or macro one-vs-rest
    AUC for multi-class: threshold-free and insensitive to class imbalance, so it is the
    same choice for any number of classes), regression ``mae``, segmentation ``dice``
    (the table's ``default_monitor``; a task's choices are :data:`VALIDATION_METRICS`).
    An explicit name is minimised when the metric table says lower is better (``loss``,
    ``mae``, ``mse``, ``rmse``, ``hd95``, ``ece``, ...) or, outside the table, when it ends
    in ``loss`` (``dice_loss``); it is maximised otherwise. A leading ``val_``
    is dropped: ``val_loss`` and ``loss`` both give ``("loss", "min")``, so the returned
    name is the key in the validation metrics dict (``history`` stores it as
    ``"val_" + name``).

    Args:
        task: ``classification``, ``regression`` or ``segmentation``.
        name: ``auto`` or a metric name (``early_stopping.metric`` in the config).
        available: Optional names the validation step produces; an unknown name then
            fails with the list of choices.

    Returns:
        ``(metric name, "max" | "min")``.

    Raises:
        ConfigError: for an unknown task, or a name not in ``available``.
    """
    if task not in TASKS:
        raise ConfigError(f"task: unknown task {task!r}; choose one of {', '.join(TASKS)}")
    name = (name or "auto").strip()
    chosen = default_monitor(task) if name == "auto" else name.removeprefix("val_")
    if available is not None:
        choices = sorted({a.removeprefix("val_") for a in available})
        if chosen not in choices:
            close = difflib.get_close_matches(chosen, choices, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"train.early_stopping.metric: {chosen!r} is not a validation "
                              f"metric of this {task} run.{hint} Choose one of: "
                              f"{', '.join(choices)}")
    return chosen, "min" if lower_is_better(chosen) else "max"
