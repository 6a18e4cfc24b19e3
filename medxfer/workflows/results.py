"""Final evaluation of the selected model: metrics, CIs, predictions, figures, report."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medxfer.config import RunConfig
from medxfer.training.amp import Precision
from medxfer.training.evaluate import Predictions, predict
from medxfer.training.trainer import FitResult
from medxfer.io import atomic_write_json


#: Bins of the expected calibration error (the same as :mod:`medxfer.workflows.ensemble`'s).
ECE_BINS = 15


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe floats (NaN → None)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, (float, np.floating)):
            out[key] = None if np.isnan(value) else float(value)
        elif isinstance(value, (np.integer,)):
            out[key] = int(value)
        else:
            out[key] = value
    return out


def evaluate_and_report(config: RunConfig, run_dir: Path, model: torch.nn.Module, bundle: Any,
                        result: FitResult, run_info: dict[str, Any], *, val_loader: Any,
                        test_loader: Any, device: torch.device, precision: Precision,
                        loss_fn: torch.nn.Module, target: Any = None) -> dict[str, Any]:
    """Evaluate on validation and test, write every output file, return the summary.

    The binary decision threshold is chosen on validation (``eval.threshold``) and only
    applied to test. Test metrics get percentile-bootstrap 95% confidence intervals.
    With ``target`` (the target-domain :class:`~medxfer.data.loading.DataBundle`), its test
    split is evaluated too (``target_test`` in the summary, same threshold) and the
    source-vs-target feature figure is drawn.

    In a distributed run every rank evaluates its shard and gets the whole split's
    predictions; only rank 0 computes the confidence intervals and writes files.
    """
    from medxfer import metrics as M
    from medxfer.training import distributed as D

    # Collective in a distributed run: every rank predicts its shard, all get the whole split.
    val = predict(model, val_loader, device, precision, config.task, loss_fn)
    test = predict(model, test_loader, device, precision, config.task, loss_fn)
    summary: dict[str, Any] = {"task": config.task}
    threshold = _threshold(config, val, M) if config.task == "classification" else None
    target_test = None
    if target is not None:
        from medxfer.workflows import domain as DA

        target_test = _clean(DA.classification_target_metrics(
            config, model, target, threshold=threshold, device=device,
            precision=precision, loss_fn=loss_fn))
    writes = D.is_main()  # only rank 0 computes CIs and writes files
    figures_dir = run_dir / "figures"
    if writes:
        figures_dir.mkdir(parents=True, exist_ok=True)
    if config.task == "classification":
        val_m = M.classification_metrics(val.targets.astype(int), val.scores, threshold=threshold)
        test_m = M.classification_metrics(test.targets.astype(int), test.scores,
                                          threshold=threshold)
        for values, preds in ((val_m, val), (test_m, test)):  # calibration, as ensembles report
            values["ece"] = M.expected_calibration_error(preds.targets.astype(int), preds.scores,
                                                         ECE_BINS)
        y_pred = _decide(test.scores, threshold)
        cm = M.confusion_matrix(test.targets.astype(int), y_pred, bundle.num_classes)
        metric_fn = functools.partial(M.classification_metrics, threshold=threshold)
        ci = M.bootstrap_ci(test.targets.astype(int), test.scores, metric_fn,
                            n_boot=config.eval.bootstrap, seed=config.train.seed) \
            if config.eval.bootstrap and writes else {}
        if writes:
            from medxfer import report as R

            R.plot_confusion_matrix(cm, bundle.class_names, figures_dir / "confusion_matrix.png",
                                    title="Test confusion matrix")
            R.plot_roc_curve(test.targets.astype(int), test.scores,
                             figures_dir / "roc_curve.png", bundle.class_names)
            R.write_predictions_csv(run_dir / R.PREDICTIONS_CSV, test.ids,
                                    test.targets.astype(int), test.scores, y_pred,
                                    bundle.class_names)
        summary.update(threshold=threshold, confusion_matrix=cm,
                       class_names=bundle.class_names,
                       threshold_source=("fixed" if threshold is None or
                                         config.eval.threshold == "fixed"
                                         else f"{config.eval.threshold} on validation"))
    else:
        val_m = M.regression_metrics(val.targets, val.scores)
        test_m = M.regression_metrics(test.targets, test.scores)
        ci = M.bootstrap_ci(test.targets, test.scores, M.regression_metrics,
                            n_boot=config.eval.bootstrap, seed=config.train.seed) \
            if config.eval.bootstrap and writes else {}
        if writes:
            from medxfer import report as R

            R.write_predictions_csv(run_dir / R.PREDICTIONS_CSV, test.ids, test.targets,
                                    test.scores, test.scores, bundle.class_names)
    if target_test is not None:
        summary["target_test"] = target_test
    if writes:
        if result.history:  # a deep ensemble draws its members' curves itself
            R.plot_training_curves(result.history, figures_dir / "training_curves.png")
        if target is not None:
            DA.feature_outputs(config, run_dir, model, bundle, target, device=device)
    val_m["loss"], test_m["loss"] = val.loss, test.loss
    # run_info comes last: a deep ensemble replaces the training facts (epochs, history)
    summary.update(val=_clean(val_m), test=_clean(test_m),
                   **{**run_summary_fields(config, run_dir, bundle, result, ci, figures_dir),
                      **run_info})
    if writes:
        atomic_write_json(run_dir / "metrics.json", summary)
        R.write_report(run_dir, summary)
    return summary


def run_summary_fields(config: RunConfig, run_dir: Path, bundle: Any, result: FitResult,
                       ci: dict[str, tuple[float, float]], figures_dir: Path) -> dict[str, Any]:
    """The ``metrics.json`` fields every task shares: CIs, training facts, figures, splits."""
    return dict(
        ci95={k: [None if np.isnan(lo) else float(lo), None if np.isnan(hi) else float(hi)]
              for k, (lo, hi) in ci.items()},
        train_seconds=result.train_seconds, best_epoch=result.best_epoch,
        monitor=result.monitor, select=config.train.early_stopping.select,
        stopped_early=result.stopped_early, epochs_run=len(result.history),
        loss={"alpha": config.loss.alpha, "beta": config.loss.beta},
        figures=sorted(str(p.relative_to(run_dir)) for p in figures_dir.glob("*.png")),
        history=[_clean(h) for h in result.history], config_path="config.yaml",
        splits=_case_counts(bundle),
    )


def _case_counts(bundle: Any) -> dict[str, int]:
    """Cases (images or volumes) per split, as ``splits.csv`` lists them; a 2D network
    trained on the slices of volumes (``data.slice_axis``) has more training items."""
    cases = getattr(bundle, "cases", None) or []
    if not cases:
        return {s: len(getattr(bundle, s)) for s in ("train", "val", "test")}
    return {s: sum(1 for c in cases if c["split"] == s) for s in ("train", "val", "test")}


def _threshold(config: RunConfig, val: Predictions, metrics_module: Any) -> float | None:
    if val.scores.ndim != 2 or val.scores.shape[1] != 2:
        return None
    if config.eval.threshold == "fixed":
        return config.eval.fixed_threshold
    if len(np.unique(val.targets)) < 2:
        return 0.5
    return float(metrics_module.choose_threshold(val.targets.astype(int), val.scores,
                                                 config.eval.threshold))


def _decide(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    if threshold is not None and scores.shape[1] == 2:
        return (scores[:, 1] >= threshold).astype(int)
    return scores.argmax(axis=1)
