"""What classification and regression share: one prediction per image, from a core-built
head on a classifier backbone's pooled features.

:class:`ImageLevelTask` builds the network, validates each epoch, evaluates the selected
model on validation and test (confidence intervals, predictions, figures, report) and
predicts new files; a subclass says how outputs become scores, which metrics it computes
and what it adds to the summary and the figures.
"""

from __future__ import annotations

import csv
import io
import os
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from medxfer import metrics as M
from medxfer import report as R
from medxfer.config import RunConfig
from medxfer.data import inference_transform
from medxfer.errors import ConfigError
from medxfer.io import atomic_write_json, atomic_write_text
from medxfer.models import build_network
from medxfer.models.segmentation import builds_segmentation
from medxfer.plugins import Registries
from medxfer.report.tables import PREDICTIONS_CSV
from medxfer.tasks.backbone_build import create_backbone
from medxfer.tasks.base import PredictionOutput, Task
from medxfer.tasks.domain_evaluation import feature_outputs, target_test_predictions
from medxfer.tasks.networks import backbone_entry
from medxfer.tasks.summary import clean, run_summary_fields
from medxfer.training import distributed as D
from medxfer.training.amp import Precision
from medxfer.training.evaluate import Predictions, predict
from medxfer.training.trainer import FitResult


class ImageLevelTask(Task):
    """A task with one label and one prediction per image (classification, regression)."""

    supports_tta = True
    supports_deep_ensembles = True

    # -- what a subclass says ------------------------------------------------------------

    @abstractmethod
    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """The network's outputs ``[N, K]`` as the scores metrics read (class
        probabilities ``[N, C]``, or values ``[N]``)."""

    @abstractmethod
    def metric_fn(self, threshold: float | None = None) -> M.MetricFn:
        """The task's metric function ``(labels, scores) -> {name: value}`` (one that
        :func:`medxfer.metrics.bootstrap_ci` evaluates in batches)."""

    def labels(self, targets: np.ndarray) -> np.ndarray:
        """Targets as the metric function takes them."""
        return targets

    def metrics(self, targets: np.ndarray, scores: np.ndarray, *,
                threshold: float | None = None) -> dict[str, float]:
        """The task's metrics of ``scores`` against ``targets``."""
        return self.metric_fn(threshold)(self.labels(targets), scores)

    def evaluation_metrics(self, preds: Predictions, threshold: float | None) -> dict[str, Any]:
        """The metrics a final evaluation reports for one split (validation or test)."""
        return self.metrics(preds.targets, preds.scores, threshold=threshold)

    def choose_threshold(self, config: RunConfig, val: Predictions) -> float | None:
        """The decision threshold chosen on validation (``None``: the task has none)."""
        return None

    @abstractmethod
    def test_outputs(self, config: RunConfig, run_dir: Path, bundle: Any, test: Predictions,
                     threshold: float | None, *, writes: bool) -> dict[str, Any]:
        """Write ``predictions.csv`` and the task's test figures (when ``writes``) and
        return the task's own summary keys."""

    @abstractmethod
    def prediction_row(self, path: Path, output: torch.Tensor, class_names: Sequence[str],
                       threshold: float | None) -> list[str]:
        """One row of ``medxfer predict``'s CSV for one image's output ``[1, K]``."""

    @abstractmethod
    def prediction_header(self, class_names: Sequence[str]) -> list[str]:
        """The header of ``medxfer predict``'s CSV."""

    # -- network and training ------------------------------------------------------------

    def build_network(self, config: RunConfig, registries: Registries, bundle: Any,
                      backbone_kwargs: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
        """A core-built head (``model.head``) on the configured classifier backbone."""
        entry = backbone_entry(config, registries)
        if builds_segmentation(entry.factory):
            raise ConfigError(f"model.backbone.name: {entry.name!r} builds a segmentation "
                              f"network; use it with task: segmentation")
        kwargs = {"in_channels": bundle.in_channels, "spatial_dims": bundle.spatial_dims,
                  **backbone_kwargs}
        backbone = create_backbone(config, registries, entry, kwargs)
        outputs = bundle.num_classes if self.labels_are_classes else 1
        head = config.model.head
        return build_network(backbone, outputs, dropout=head.dropout,
                             hidden=head.hidden), backbone

    def validator(self, config: RunConfig, bundle: Any, val_loader: Any, device: torch.device,
                  precision: Precision, loss_fn: Any) -> Callable[[torch.nn.Module],
                                                                  dict[str, float]]:
        """Predict the validation loader and compute the task's metrics."""

        def validate(net: torch.nn.Module) -> dict[str, float]:
            preds = predict(net, val_loader, device, precision, self, loss_fn)
            values = self.metrics(preds.targets, preds.scores)
            return {"val_loss": preds.loss,
                    **{f"val_{k}": v for k, v in values.items() if k != "n"}}

        return validate

    # -- evaluation ----------------------------------------------------------------------

    def evaluate_and_report(self, config: RunConfig, run_dir: Path, model: torch.nn.Module,
                            bundle: Any, result: FitResult, run_info: dict[str, Any], *,
                            val_loader: Any, test_loader: Any, device: torch.device,
                            precision: Precision, loss_fn: Any,
                            target: Any = None) -> dict[str, Any]:
        """Evaluate on validation and test, write every output file, return the summary.

        A decision threshold (binary classification, ``eval.threshold``) is chosen on
        validation and only applied to test. Test metrics get percentile-bootstrap 95%
        confidence intervals. With ``target`` (the target-domain
        :class:`~medxfer.data.loading.DataBundle`) its test split is evaluated too
        (``target_test`` in the summary, same threshold) and the source-vs-target feature
        figure is drawn.

        In a distributed run every rank evaluates its shard and gets the whole split's
        predictions; only rank 0 computes the confidence intervals and writes files.
        """
        # Collective in a distributed run: every rank predicts its shard, all get the split.
        val = predict(model, val_loader, device, precision, self, loss_fn)
        test = predict(model, test_loader, device, precision, self, loss_fn)
        threshold = self.choose_threshold(config, val)
        summary: dict[str, Any] = {"task": self.name}
        target_test = None
        if target is not None:
            target_preds = target_test_predictions(config, model, target, self,
                                                      device=device, precision=precision,
                                                      loss_fn=loss_fn)
            target_test = clean({**self.metrics(target_preds.targets, target_preds.scores,
                                                threshold=threshold),
                                 "loss": target_preds.loss})
        writes = D.is_main()  # only rank 0 computes CIs and writes files
        figures_dir = run_dir / "figures"
        if writes:
            figures_dir.mkdir(parents=True, exist_ok=True)
        val_m = self.evaluation_metrics(val, threshold)
        test_m = self.evaluation_metrics(test, threshold)
        ci = self.bootstrap(config, test, threshold, writes)
        extra = self.test_outputs(config, run_dir, bundle, test, threshold, writes=writes)
        summary.update(extra)
        if target_test is not None:
            summary["target_test"] = target_test
        if writes:
            if result.history:  # a deep ensemble draws its members' curves itself
                R.plot_training_curves(result.history, figures_dir / "training_curves.png",
                                       selected_epoch=result.best_epoch, monitor=result.monitor,
                                       select=config.train.early_stopping.select)
            if target is not None:
                feature_outputs(config, run_dir, model, bundle, target, device=device)
        val_m["loss"], test_m["loss"] = val.loss, test.loss
        # run_info comes last: a deep ensemble replaces the training facts (epochs, history)
        summary.update(val=clean(val_m), test=clean(test_m),
                       **{**run_summary_fields(config, run_dir, bundle, result, ci,
                                               figures_dir), **run_info})
        if writes:  # metrics.json last: it marks the run finished
            R.write_report(run_dir, summary)
            atomic_write_json(run_dir / "metrics.json", summary)
        return summary

    def bootstrap(self, config: RunConfig, test: Predictions, threshold: float | None,
                  writes: bool) -> dict[str, tuple[float, float]]:
        """Percentile-bootstrap 95% CIs of the test metrics (rank 0 only; ``{}`` without
        ``eval.bootstrap``)."""
        if not (config.eval.bootstrap and writes):
            return {}
        return M.bootstrap_ci(self.labels(test.targets), test.scores, self.metric_fn(threshold),
                              n_boot=config.eval.bootstrap, seed=config.train.seed)

    # -- prediction on new files ---------------------------------------------------------

    def predict_files(self, loaded: Any, inputs: Sequence[Path], output: str | None, *,
                      dicom_seg: bool = False) -> PredictionOutput:
        """One CSV row per input file (see :meth:`prediction_header`), written to
        ``output`` (a CSV file, or a folder to hold ``predictions.csv``) or, without it,
        given back for standard output.

        Raises:
            ConfigError: for an ``output`` file that exists, or ``dicom_seg`` (segmentation
                runs only).
        """
        csv_path = None if output is None else csv_target(output)
        if dicom_seg:
            raise ConfigError("--dicom-seg applies to segmentation runs only; "
                              f"{str(loaded.run_dir)!r} is a {self.name} run")
        transform = inference_transform(loaded.config, imagenet_norm=loaded.imagenet_norm,
                                        spatial_dims=int(loaded.sidecar["spatial_dims"]),
                                        in_channels=int(loaded.sidecar["in_channels"]))
        threshold = loaded.threshold
        names = loaded.class_names
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.prediction_header(names))
        with torch.no_grad():
            for path in inputs:
                out = loaded.model(transform(str(path)).unsqueeze(0)).float()
                writer.writerow(self.prediction_row(path, out, names, threshold))
        if csv_path is None:
            return PredictionOutput(stdout=buffer.getvalue())
        atomic_write_text(csv_path, buffer.getvalue())
        return PredictionOutput(messages=[f"wrote {len(inputs)} predictions to {csv_path}"])


def csv_target(output: str) -> Path:
    """The CSV file ``--output`` names for a classification or regression run.

    A folder (one that exists, or a name ending in a path separator) gets
    ``predictions.csv`` inside it; anything else is the CSV file itself. An existing file is
    refused: results are never overwritten.

    Raises:
        ConfigError: when the file exists.
    """
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        path = path / PREDICTIONS_CSV
    if path.exists():
        raise ConfigError(f"--output {str(path)!r} exists; results are never overwritten "
                          "(give another file or folder)")
    return path
