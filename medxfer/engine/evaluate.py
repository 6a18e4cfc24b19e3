"""Running a model over a data loader and collecting its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from medxfer.engine.amp import Precision


@dataclass
class Predictions:
    """Model outputs over a dataset, in dataset order.

    Attributes:
        ids: Case ids.
        targets: Labels (``[N]`` ints) or regression targets (``[N]`` floats).
        scores: Class probabilities ``[N, C]`` (classification) or predictions ``[N]``.
        loss: Mean task loss over the dataset.
    """

    ids: list[str]
    targets: np.ndarray
    scores: np.ndarray
    loss: float


@torch.no_grad()
def predict(model: nn.Module, loader: Any, device: torch.device, precision: Precision,
            task: str, loss_fn: Callable[..., torch.Tensor] | None = None) -> Predictions:
    """Evaluate ``model`` on every batch of ``loader`` (the model is put in eval mode)."""
    was_training = model.training
    model.eval()
    ids: list[str] = []
    targets, scores = [], []
    loss_sum, n = 0.0, 0
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        with precision.autocast():
            outputs = model(images)
        outputs = outputs.float()
        if loss_fn is not None:
            loss_sum += float(loss_fn(outputs, labels)) * len(images)
        n += len(images)
        if task == "classification":
            scores.append(torch.softmax(outputs, dim=1).cpu())
        else:
            scores.append(outputs.reshape(len(images), -1)[:, 0].cpu())
        targets.append(labels.cpu())
        ids.extend(str(i) for i in batch.get("id", range(n - len(images), n)))
    model.train(was_training)
    if not scores:
        return Predictions([], np.zeros(0), np.zeros((0, 0)), float("nan"))
    return Predictions(ids, torch.cat(targets).numpy(), torch.cat(scores).numpy(),
                       loss_sum / max(n, 1) if loss_fn is not None else float("nan"))
