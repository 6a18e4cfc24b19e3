"""What the benchmarks share: a run's training parts, built as ``medxfer run`` builds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def build_parts(config_path: Path | None, overrides: list[str], run_dir: Path, *,
                device: str | None = None) -> dict[str, Any]:
    """The run's training loader, network, loss, AdamW and precision, without training.

    ImageNet weights are replaced by a random initialisation: weights do not change the
    timing, and the benchmarks then need no download. The run's seeding and
    ``train.deterministic`` setting are applied, as they choose the cuDNN algorithms.
    """
    from medxfer.config import load_config
    from medxfer.data import load_data
    from medxfer.training.amp import resolve_device, resolve_precision
    from medxfer.tasks import task_of
    from medxfer.training.loaders import make_loader
    from medxfer.workflows.run_setup import wants_imagenet_norm
    from medxfer.training.seeding import seed_everything
    from medxfer.plugins import build_registries

    config = load_config(config_path, list(overrides) + ([f"train.device={device}"]
                                                         if device else []))
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed, deterministic=config.train.deterministic)
    registries = build_registries()
    kwargs = dict(config.model.backbone.kwargs)
    pretrained = kwargs.get("pretrained", "none")
    if str(pretrained).lower() == "imagenet":
        kwargs["pretrained"] = "none"
    bundle = load_data(config, imagenet_norm=wants_imagenet_norm(config, pretrained),
                       cache_dir=run_dir / "cache")
    task = task_of(config)
    model, _ = task.build_network(config, registries, bundle, kwargs)
    dev = resolve_device(config.train.device)
    model.to(dev).train()
    loader = make_loader(bundle.train, config, train=True, labels=bundle.train_labels,
                         device=dev)
    return {"config": config, "model": model, "loader": loader,
            "loss": task.loss(config, bundle.train_labels, bundle.num_classes, dev),
            "optimizer": torch.optim.AdamW(model.parameters(), lr=1e-4), "device": dev,
            "precision": resolve_precision(config.train.amp, dev),
            "spatial_dims": bundle.spatial_dims}


def train_step(parts: dict[str, Any], batch: dict[str, Any], *, precision: Any = None,
               scaler: torch.amp.GradScaler | None = None, forward: Any = None,
               channels_last: bool = False, before: Any = None) -> None:
    """One training step on ``batch`` (moved to the device first; ``before()`` first)."""
    from medxfer.training.amp import to_channels_last

    if before is not None:
        before()
    device = parts["device"]
    images = batch["image"].to(device, non_blocking=True)
    if channels_last:
        images = to_channels_last(images)
    labels = batch["label"].to(device, non_blocking=True)
    precision = precision or parts["precision"]
    forward = forward or parts["model"].forward_features
    with precision.autocast():
        outputs, _ = forward(images)
        loss = parts["loss"](outputs, labels)
    parts["optimizer"].zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(parts["optimizer"])
        scaler.update()
    else:
        loss.backward()
        parts["optimizer"].step()


def synchronize(device: torch.device) -> None:
    """Wait for queued device work (timings on CUDA are otherwise meaningless)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def preload(loader: Any, steps: int) -> list[dict[str, Any]]:
    """``steps`` batches drawn from ``loader`` (cycling), kept in memory."""
    batches: list[dict[str, Any]] = []
    while len(batches) < steps:
        for batch in loader:
            batches.append({"image": batch["image"], "label": batch["label"]})
            if len(batches) == steps:
                break
    return batches


def config_data_present(path: Path) -> bool:
    """Whether the dataset a config reads exists here (embedded sample data always does)."""
    from medxfer.config import load_config

    config = load_config(path)
    if not config.data.path:
        return True
    return Path(config.data.path).expanduser().exists()
