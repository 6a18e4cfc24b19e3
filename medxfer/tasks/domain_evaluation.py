"""A domain-adapted model on the target domain: its test predictions, and its pooled
features of both domains (``features.npz`` and the PCA figure)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medxfer.config import RunConfig
from medxfer.io import atomic_open
from medxfer.models.domain import SOURCE, TARGET, in_domain
from medxfer.report.domain_figures import plot_feature_pca
from medxfer.training.evaluate import Predictions, predict
from medxfer.training.loaders import make_loader

#: At most this many test items per domain go into ``features.npz`` and the figure.
MAX_FEATURE_POINTS = 600
FEATURES_FILE = "features.npz"


def target_test_predictions(config: RunConfig, model: torch.nn.Module, target: Any, task: Any,
                            *, device: torch.device, precision: Any, loss_fn: Any) -> Predictions:
    """The model's predictions of the target domain's test split (the model in the
    ``target`` domain), for an image-level ``task`` to score."""
    loader = make_loader(target.test, config, train=False, device=device)
    with in_domain(model, TARGET):
        return predict(model, loader, device, precision, task, loss_fn)


@torch.no_grad()
def pooled_features(model: torch.nn.Module, dataset: Any, config: RunConfig, domain: str, *,
                    device: torch.device, limit: int = MAX_FEATURE_POINTS) -> np.ndarray:
    """Pooled backbone features ``[n, F]`` of the first ``limit`` items of ``dataset``."""
    was_training = model.training
    model.eval()
    rows: list[torch.Tensor] = []
    indices = list(range(min(len(dataset), limit)))
    with in_domain(model, domain):
        for start in range(0, len(indices), 64):
            images = torch.stack([dataset[i]["image"] for i in indices[start:start + 64]])
            rows.append(model.forward_features(images.to(device))[1].float().cpu())
    model.train(was_training)
    return torch.cat(rows).numpy() if rows else np.zeros((0, 0), dtype=np.float32)


def feature_outputs(config: RunConfig, run_dir: Path, model: torch.nn.Module, source: Any,
                    target: Any, *, device: torch.device) -> list[str]:
    """Write ``features.npz`` (source and target test features) and the PCA figure.

    Returns:
        The figure paths written, relative to ``run_dir``.
    """
    src = pooled_features(model, source.test, config, SOURCE, device=device)
    tgt = pooled_features(model, target.test, config, TARGET, device=device)
    with atomic_open(run_dir / FEATURES_FILE, "wb") as handle:
        np.savez_compressed(handle, source=src, target=tgt)
    figure = run_dir / "figures" / "domain_features_pca.png"
    method = config.domain_adaptation.name if config.domain_adaptation else "no adaptation"
    plot_feature_pca({f"test features, {method}": (src, tgt)}, figure)
    return [str(figure.relative_to(run_dir))]
