"""Classification: one class per image, from softmax probabilities.

A binary classifier decides at a threshold chosen on validation (``eval.threshold``); the
report has the confusion matrix, the ROC curve and calibration (ECE); ``medxfer ensemble``
combines the class probabilities of finished runs with a combiner plugin.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from medxfer import metrics as M
from medxfer import report as R
from medxfer.config import RunConfig
from medxfer.errors import ConfigError
from medxfer.tasks.classification_ensemble import evaluate_classification_ensemble
from medxfer.tasks.decisions import ECE_BINS, choose_threshold, decide
from medxfer.tasks.image_level import ImageLevelTask
from medxfer.training.evaluate import Predictions
from medxfer.training.loaders import class_weights


class ClassificationTask(ImageLevelTask):
    """One class label per image; the network outputs one logit per class."""

    name = "classification"
    label_kind = "class"
    supports_run_ensembles = True

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Class probabilities (softmax over the logits)."""
        return torch.softmax(outputs, dim=1)

    def metric_fn(self, threshold: float | None = None) -> M.MetricFn:
        """Accuracy, balanced accuracy, precision, recall, specificity, F1 and AUC, deciding
        binary cases at ``threshold`` (see :func:`medxfer.metrics.classification_metrics`)."""
        return functools.partial(M.classification_metrics, threshold=threshold)

    def labels(self, targets: np.ndarray) -> np.ndarray:
        """Class indices."""
        return targets.astype(int)

    def evaluation_metrics(self, preds: Predictions, threshold: float | None) -> dict[str, Any]:
        """The metrics and the expected calibration error (as ensembles report it)."""
        values = self.metrics(preds.targets, preds.scores, threshold=threshold)
        values["ece"] = M.expected_calibration_error(self.labels(preds.targets), preds.scores,
                                                     ECE_BINS)
        return values

    def loss(self, config: RunConfig, train_labels: list[int], num_classes: int,
             device: torch.device) -> torch.nn.Module:
        """Cross-entropy, class-weighted with ``train.imbalance: class_weights``.

        Raises:
            ConfigError: for a segmentation loss in ``loss.name``.
        """
        if config.loss.name not in ("auto", "ce"):
            raise ConfigError(f"loss.name: {config.loss.name!r} is a segmentation loss; "
                              "classification uses ce (auto)")
        weight = None
        if config.train.imbalance == "class_weights" and train_labels:
            weight = class_weights(train_labels, num_classes).to(device)
        return torch.nn.CrossEntropyLoss(weight=weight,
                                         label_smoothing=config.loss.label_smoothing)

    # -- decisions -----------------------------------------------------------------------

    def choose_threshold(self, config: RunConfig, val: Predictions) -> float | None:
        """The binary decision threshold by ``eval.threshold`` on validation (``None`` for
        more than two classes; 0.5 when validation holds one class)."""
        return choose_threshold(config, val.targets, val.scores)

    def test_outputs(self, config: RunConfig, run_dir: Path, bundle: Any, test: Predictions,
                     threshold: float | None, *, writes: bool) -> dict[str, Any]:
        """The confusion matrix, ROC curve and ``predictions.csv`` of the test split."""
        y_true = self.labels(test.targets)
        y_pred = decide(test.scores, threshold)
        cm = M.confusion_matrix(y_true, y_pred, bundle.num_classes)
        if writes:
            figures = run_dir / "figures"
            R.plot_confusion_matrix(cm, bundle.class_names, figures / "confusion_matrix.png",
                                    title="Test confusion matrix")
            R.plot_roc_curve(y_true, test.scores, figures / "roc_curve.png", bundle.class_names,
                             threshold=threshold, n_boot=config.eval.bootstrap,
                             seed=config.train.seed, split="test")
            R.write_predictions_csv(run_dir / R.PREDICTIONS_CSV, test.ids, y_true, test.scores,
                                    y_pred, bundle.class_names)
        return {"threshold": threshold, "confusion_matrix": cm,
                "class_names": bundle.class_names,
                "threshold_source": ("fixed" if threshold is None or
                                     config.eval.threshold == "fixed" else
                                     f"{config.eval.threshold} on validation")}

    # -- prediction on new files ---------------------------------------------------------

    def prediction_header(self, class_names: Sequence[str]) -> list[str]:
        """``file, prediction, prob_<class>...``."""
        return ["file", "prediction", *[f"prob_{n}" for n in class_names]]

    def prediction_row(self, path: Path, output: torch.Tensor, class_names: Sequence[str],
                       threshold: float | None) -> list[str]:
        """The predicted class (by the run's threshold when binary) and every probability."""
        probs = self.scores(output)[0]
        if threshold is not None and len(probs) == 2:
            label = int(probs[1] >= threshold)
        else:
            label = int(probs.argmax())
        return [str(path), class_names[label] if class_names else label,
                *[f"{p:.6f}" for p in probs.tolist()]]

    # -- export --------------------------------------------------------------------------

    def describe_output(self, loaded: Any) -> dict[str, Any]:
        """Logits, one per class; softmax gives the class probabilities."""
        return {"name": "logits", "class_names": loaded.output_names,
                "meaning": "softmax over dimension 1 gives class probabilities"}

    def decision(self, loaded: Any) -> dict[str, Any] | None:
        """The binary decision threshold chosen on validation, when the run has one."""
        threshold = loaded.threshold
        if threshold is None:
            return None
        return {"threshold": threshold,
                "rule": "class 1 when its softmax probability is >= threshold, else class 0 "
                        "(chosen on validation; argmax would be a threshold of 0.5)"}

    # -- ensembles of finished runs -----------------------------------------------------

    def evaluate_run_ensemble(self, members: Sequence[Any], combiner: Any, info: dict[str, Any],
                              staging: Path, device: torch.device) -> dict[str, Any]:
        """Combine the members' class probabilities; see
        :func:`medxfer.tasks.classification_ensemble.evaluate_classification_ensemble`."""
        return evaluate_classification_ensemble(self, members, combiner, info, staging, device)
