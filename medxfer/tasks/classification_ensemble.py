"""``medxfer ensemble`` of classification runs: members' class probabilities combined by a
combiner plugin, each member and the ensemble scored alike, with calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medxfer import metrics as M
from medxfer import report as R
from medxfer.config import RunConfig
from medxfer.errors import ConfigError
from medxfer.report.calibration import plot_reliability_diagram
from medxfer.tasks.decisions import ECE_BINS, choose_threshold, decide, threshold_source
from medxfer.tasks.combining import combine, fit_combiner
from medxfer.tasks.summary import clean
from medxfer.training.evaluate import predict
from medxfer.training.loaders import make_loader

SPLITS = ("val", "test")


def evaluate_classification_ensemble(task: Any, members: Sequence[Any], combiner: Any,
                                     info: dict[str, Any], staging: Path,
                                     device: torch.device) -> dict[str, Any]:
    """Score every member and the ensemble of their class probabilities on test.

    Each member predicts its own validation and test data; the combiner is fitted on the
    validation probabilities (with each member's validation AUC, or accuracy where AUC is
    undefined, as its score) and combines the test probabilities. Writes the reliability
    diagram, confusion matrix, ROC curve and ``predictions.csv`` into ``staging``.

    Args:
        task: The classification task.
        members: The members, data loaded (see :func:`medxfer.workflows.ensemble.load_member_data`).
        combiner: The combiner object.
        info: ``{"name": ..., "options": ...}`` of the combiner.
        staging: The folder the outputs are written to.
        device: Inference device.

    Returns:
        The summary (without ``combiner`` and ``figures``, which the caller adds).

    Raises:
        ConfigError: when two members give a case different labels.
    """
    outputs: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    targets: dict[str, np.ndarray] = {}
    ids: dict[str, list[str]] = {}
    for member in members:
        for split in SPLITS:
            loader = make_loader(member.datasets[split], member.config, train=False,
                                 device=device)
            preds = predict(member.loaded.model, loader, device, member.precision, task)
            y = preds.targets.astype(int)
            if split in targets and not np.array_equal(targets[split], y):
                case = ids[split][int(np.flatnonzero(targets[split] != y)[0])]
                raise ConfigError(f"runs {members[0].run!r} and {member.run!r} give different "
                                  f"labels to {split} case {case!r}; ensemble members must be "
                                  "trained on the same data")
            targets[split], ids[split] = y, preds.ids
            outputs[split].append(preds.scores)
    val = np.stack(outputs["val"])
    test = np.stack(outputs["test"])
    rows = [{**m.describe(), **_evaluate(m.config, targets, val[i], test[i])}
            for i, m in enumerate(members)]
    scores = [r["val"]["auc"] if r["val"]["auc"] is not None else r["val"]["accuracy"]
              for r in rows]
    fit_combiner(combiner, torch.from_numpy(val), torch.from_numpy(targets["val"]), scores)
    ens_val = combine(combiner, torch.from_numpy(val), info["name"]).numpy()
    ens_test = combine(combiner, torch.from_numpy(test), info["name"]).numpy()
    ensemble = {"label": f"ensemble ({info['name']})",
                **_evaluate(members[0].config, targets, ens_val, ens_test)}

    figures = staging / "figures"
    y_test, names = targets["test"], members[0].loaded.class_names
    curves = {row["label"]: {**M.reliability_bins(y_test, test[i], ECE_BINS),
                             "ece": row["test"]["ece"]} for i, row in enumerate(rows)}
    curves[ensemble["label"]] = {**M.reliability_bins(y_test, ens_test, ECE_BINS),
                                 "ece": ensemble["test"]["ece"]}
    plot_reliability_diagram(curves, figures / "reliability_diagram.png",
                             highlight=ensemble["label"])
    y_pred = decide(ens_test, ensemble["threshold"])
    ensemble["confusion_matrix"] = M.confusion_matrix(y_test, y_pred, len(names))
    R.plot_confusion_matrix(ensemble["confusion_matrix"], names,
                            figures / "confusion_matrix.png",
                            title=f"Test confusion matrix, {ensemble['label']}")
    R.plot_roc_curve(y_test, ens_test, figures / "roc_curve.png", names,
                     threshold=ensemble["threshold"])
    R.write_predictions_csv(staging / R.PREDICTIONS_CSV, ids["test"], y_test, ens_test, y_pred,
                            names)
    return {"task": task.name, "class_names": names, "runs": [m.run for m in members],
            "members": rows, "ensemble": ensemble,
            "member_scores": {"metric": "val auc (val accuracy where AUC is undefined)",
                              "values": scores},
            "calibration": {"metric": "expected calibration error, top-label confidence",
                            "n_bins": ECE_BINS},
            "threshold_source": threshold_source(members[0].config),
            "splits": {s: len(ids[s]) for s in SPLITS}, "predictions": R.PREDICTIONS_CSV}


def _evaluate(config: RunConfig, targets: dict[str, np.ndarray], val: np.ndarray,
              test: np.ndarray) -> dict[str, Any]:
    """Validation and test metrics plus ECE; the threshold chosen on validation."""
    y_val, y_test = targets["val"], targets["test"]
    threshold = choose_threshold(config, y_val, val)
    out: dict[str, Any] = {"threshold": threshold}
    for split, y, p in (("val", y_val, val), ("test", y_test, test)):
        values = M.classification_metrics(y, p, threshold=threshold)
        values["ece"] = M.expected_calibration_error(y, p, ECE_BINS)
        out[split] = clean(values)
    return out
