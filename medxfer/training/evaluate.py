"""Running a model over a data loader and collecting its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from medxfer.training import distributed as D
from medxfer.training import shards as S
from medxfer.training.amp import Precision
from medxfer.training.compiling import begin_step
from medxfer.training.shards import is_sharded


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
            task: Any, loss_fn: Callable[..., torch.Tensor] | None = None) -> Predictions:
    """Evaluate ``model`` on every batch of ``loader`` (the model is put in eval mode).

    ``task`` (an image-level :class:`~medxfer.tasks.base.Task`) turns the outputs into
    scores (``task.scores(outputs)``: class probabilities, or values).

    When ``loader`` reads one rank's evaluation shard of a distributed run
    (:func:`medxfer.training.shards.is_sharded`), the outputs of every rank are gathered
    and returned in dataset order on every rank.
    """
    was_training = model.training
    model.eval()
    ids: list[str] = []
    targets, scores = [], []
    loss_sum, n = 0.0, 0
    for batch in loader:
        images = batch["image"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True)
        begin_step(model)  # train.compile: cudagraphs
        with precision.autocast():
            outputs = model(images)
        outputs = outputs.float()
        if loss_fn is not None:
            loss_sum += float(loss_fn(outputs, labels)) * len(images)
        n += len(images)
        scores.append(task.scores(outputs).cpu())
        targets.append(labels.cpu())
        ids.extend(str(i) for i in batch.get("id", range(n - len(images), n)))
    model.train(was_training)

    if is_sharded(loader):
        return _gather(ids, targets, scores, loss_sum, n, loss_fn is not None)
    if not scores:
        return Predictions([], np.zeros(0), np.zeros((0, 0)), float("nan"))
    return Predictions(ids, torch.cat(targets).numpy(), torch.cat(scores).numpy(),
                       loss_sum / max(n, 1) if loss_fn is not None else float("nan"))


def _gather(ids: list[str], targets: list[torch.Tensor], scores: list[torch.Tensor],
            loss_sum: float, n: int, has_loss: bool) -> Predictions:
    """Every rank's shard of predictions, merged in dataset order."""
    local = (ids, torch.cat(targets).numpy() if targets else np.zeros(0),
             torch.cat(scores).numpy() if scores else np.zeros((0, 0)), loss_sum, n)
    parts = D.all_gather(local)
    total = sum(p[4] for p in parts)
    if not total:
        return Predictions([], np.zeros(0), np.zeros((0, 0)), float("nan"))
    return Predictions([str(i) for i in S.merge_shards([p[0] for p in parts])],
                       S.merge_arrays([p[1] for p in parts]),
                       S.merge_arrays([p[2] for p in parts]),
                       sum(p[3] for p in parts) / total if has_loss else float("nan"))
