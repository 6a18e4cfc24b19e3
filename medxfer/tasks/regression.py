"""Regression: one number per image, from a one-output head trained with mean squared error."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from medxfer import metrics as M
from medxfer import report as R
from medxfer.config import RunConfig
from medxfer.tasks.image_level import ImageLevelTask
from medxfer.training.evaluate import Predictions


class MSELoss(torch.nn.Module):
    """Mean squared error between a one-output head ``[N, 1]`` and float targets ``[N]``."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of one batch."""
        return torch.nn.functional.mse_loss(outputs.reshape(-1).float(),
                                            targets.reshape(-1).float())


class RegressionTask(ImageLevelTask):
    """One value per image; the network's single output is the prediction."""

    name = "regression"
    label_kind = "value"

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """The predicted values ``[N]``."""
        return outputs.reshape(len(outputs), -1)[:, 0]

    def metric_fn(self, threshold: float | None = None) -> M.MetricFn:
        """MAE, MSE, RMSE and R² (see :func:`medxfer.metrics.regression_metrics`)."""
        return M.regression_metrics

    def loss(self, config: RunConfig, train_labels: list[int], num_classes: int,
             device: torch.device) -> torch.nn.Module:
        """Mean squared error."""
        return MSELoss()

    def test_outputs(self, config: RunConfig, run_dir: Path, bundle: Any, test: Predictions,
                     threshold: float | None, *, writes: bool) -> dict[str, Any]:
        """``predictions.csv`` (``id, target, prediction``); no keys of its own."""
        if writes:
            R.write_predictions_csv(run_dir / R.PREDICTIONS_CSV, test.ids, test.targets,
                                    test.scores, test.scores, bundle.class_names)
        return {}

    def prediction_header(self, class_names: Sequence[str]) -> list[str]:
        """``file, prediction``."""
        return ["file", "prediction"]

    def prediction_row(self, path: Path, output: torch.Tensor, class_names: Sequence[str],
                       threshold: float | None) -> list[str]:
        """The predicted value."""
        return [str(path), f"{float(output.reshape(-1)[0]):.6f}"]

    def describe_output(self, loaded: Any) -> dict[str, Any]:
        """The predicted value itself (no softmax)."""
        return {"name": "logits", "target": loaded.target_name,
                "meaning": "one regression value per image, [N, 1]: the prediction itself "
                           "(what `medxfer predict` writes), no softmax"}

