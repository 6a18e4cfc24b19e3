"""``medxfer pretrain --ssl METHOD``: self-supervised pretraining of a backbone on the
training images of a dataset, labels unused, kept as a transfer source.

Two methods:

* ``contrastive`` -- SimCLR (Chen et al., ICML 2020): two augmented views of each image
  (:class:`~medxfer.data.ssl_views.ContrastiveViews`) through the backbone and a
  projection head; MONAI's ``ContrastiveLoss`` (NT-Xent) pulls the two views of an image
  together and pushes the other images of the batch away.
* ``genesis`` -- Models Genesis-style restoration (Zhou et al., MedIA 2021): the image is
  corrupted (intensity curve, local shuffling, in- or out-painting;
  :class:`~medxfer.data.ssl_views.GenesisCorruption`) and a decoder on the backbone's
  pooled features restores it (mean squared error).

The backbone is built exactly as a run builds it (``model.backbone``, ``to_3d`` and its
``pretrained`` weights included, so ImageNet -> SSL -> fine-tuning chains work). The
output folder is a transfer source like ``medxfer pretrain``'s: ``model.safetensors`` with
its ``model.json`` sidecar (the backbone's tensors as ``backbone.body.*``), and
``transfer_source.json`` with the checkpoint's SHA-256, checked before a later run with
``model.backbone.pretrained: DIR`` loads it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss

from medxfer.config import RunConfig, validate_config, write_resolved_config
from medxfer.data import load_data
from medxfer.data.augment import resolve_ops
from medxfer.data.ssl_views import ContrastiveViews, GenesisCorruption, ssl_augmentation
from medxfer.errors import ConfigError
from medxfer.io import atomic_write_json
from medxfer.models.ssl_heads import ProjectionHead, RestorationDecoder, SSLNetwork
from medxfer.plugins import Registries, build_registries
from medxfer.tasks import task_of
from medxfer.tasks.backbone_build import create_backbone
from medxfer.tasks.networks import backbone_entry
from medxfer.training.amp import channels_last_format, resolve_device, to_channels_last
from medxfer.training.checkpoints import save_model
from medxfer.training.loaders import make_loader
from medxfer.training.seeding import seed_everything
from medxfer.workflows.pretrain import transfer_source_record
from medxfer.workflows.run_folder import check_output_dir, cleared_if_nothing_to_resume
from medxfer.workflows.run_setup import backbone_weights, write_splits

#: The values of ``--ssl``.
SSL_METHODS = ("contrastive", "genesis")
#: NT-Xent temperature (SimCLR's small-batch range).
TEMPERATURE = 0.2
#: Written into the output folder: the loss per epoch, timings.
SSL_METRICS = "metrics.json"


def ssl_pretrain(config: RunConfig, method: str, run_dir: str | Path, *,
                 registries: Registries | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Pretrain the config's backbone with ``method`` on its training images into
    ``run_dir`` (a new folder) and record it as a transfer source.

    Uses ``train.epochs``, ``train.batch_size``, ``train.optimizer`` (learning rate,
    weight decay), ``train.seed``, ``train.threads`` and ``train.device``; the training
    images of ``data`` (after ``data.preprocess``), and ``data.augment``'s ops for the
    contrastive views. Labels are not read.

    Returns:
        The ``transfer_source.json`` record.

    Raises:
        ConfigError: for an unknown method, a segmentation config, or a folder in use.
    """
    if method not in SSL_METHODS:
        raise ConfigError(f"--ssl {method!r}: choose one of {', '.join(SSL_METHODS)}")
    if task_of(config).labels_are_masks:
        raise ConfigError("--ssl pretrains classifier backbones (their pooled features); "
                          "give a classification or regression config of the images")
    say = progress or (lambda _line: None)
    registries = registries or build_registries()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_resolved_config(config, run_dir)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed, deterministic=config.train.deterministic)
    kwargs, pretrained, imagenet_norm = backbone_weights(config, registries)
    plain = _without_augmentation(config)  # the views draw their own augmentation
    bundle = load_data(plain, imagenet_norm=imagenet_norm, cache_dir=run_dir / "cache")
    write_splits(run_dir / "splits.csv", bundle.cases)
    entry = backbone_entry(config, registries)
    backbone = create_backbone(config, registries, entry, {
        "in_channels": bundle.in_channels, "spatial_dims": bundle.spatial_dims, **kwargs})
    size = list(bundle.train[0]["image"].shape[1:])
    device = resolve_device(config.train.device)
    step = _method_step(method, config, backbone, bundle.in_channels, size)
    network = step.network.to(device)
    if config.train.channels_last:
        network.to(memory_format=channels_last_format(bundle.spatial_dims))
    loader = make_loader(bundle.train, plain, train=True, device=device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.train.optimizer.lr,
                                  weight_decay=config.train.optimizer.weight_decay)
    total = max(1, config.train.epochs * len(loader))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, total) / total)))
    history: list[dict[str, float]] = []
    tic = time.perf_counter()
    for epoch in range(1, config.train.epochs + 1):
        network.train()
        losses = []
        for batch in loader:
            loss = step(batch["image"].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        history.append({"epoch": epoch, "ssl_loss": float(sum(losses) / max(1, len(losses))),
                        "seconds": time.perf_counter() - tic})
        say(f"epoch {epoch}/{config.train.epochs}: {method} loss {history[-1]['ssl_loss']:.4f}")
    seconds = time.perf_counter() - tic
    info = {"method": method, "epochs": config.train.epochs, "labels_used": False,
            "train_images": len(bundle.train), "final_loss": history[-1]["ssl_loss"],
            **step.describe()}
    sidecar = {"backbone": config.model.backbone.model_dump(mode="json"), "task": "ssl",
               "ssl": info, "in_channels": bundle.in_channels,
               "spatial_dims": bundle.spatial_dims, "imagenet_norm": imagenet_norm,
               "pretrained": str(pretrained)}
    save_model(run_dir, network.cpu(), sidecar)
    summary = {"task": "ssl", "ssl": info, "history": history, "train_seconds": seconds,
               "pretrained": str(pretrained), "strategy": {"name": f"ssl:{method}"},
               "data_source": bundle.source}
    atomic_write_json(run_dir / SSL_METRICS, summary)
    record = transfer_source_record(config, run_dir, summary)
    record.update(task="ssl", ssl=info)
    atomic_write_json(run_dir / "transfer_source.json", record)
    return record


def ssl_pretrain_in_folder(config: RunConfig, method: str, output: Path, *,
                           registries: Registries,
                           progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """:func:`ssl_pretrain` into a new folder, leaving nothing behind when it fails.

    Raises:
        ConfigError: when ``output`` already holds files.
    """
    check_output_dir(output, resume=False)
    with cleared_if_nothing_to_resume(output, False):
        return ssl_pretrain(config, method, output, registries=registries, progress=progress)


def _without_augmentation(config: RunConfig) -> RunConfig:
    data = config.model_dump(mode="json")
    data["data"]["augment"] = {"preset": "none", "ops": None}
    return validate_config(data, source="ssl data")


class _Contrastive:
    """One SimCLR step: two views, projections, MONAI's NT-Xent loss."""

    def __init__(self, config: RunConfig, backbone: Any, size: list[int]) -> None:
        self.config = config
        self.network = SSLNetwork(backbone, ProjectionHead(backbone.feature_dim))
        ops = resolve_ops(config.data.augment.preset, config.data.augment.ops)
        self.views = ContrastiveViews(ops, spatial_dims=len(size), spatial_size=size,
                                      seed=config.train.seed)
        self.loss = ContrastiveLoss(temperature=TEMPERATURE)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        first, second = (_layout(self.config, v) for v in self.views(images))
        return self.loss(self.network(first), self.network(second))

    def describe(self) -> dict[str, Any]:
        return {"loss": "monai.losses.ContrastiveLoss", "temperature": TEMPERATURE}


class _Genesis:
    """One restoration step: corrupt, decode from the pooled features, mean squared error."""

    def __init__(self, config: RunConfig, backbone: Any, in_channels: int,
                 size: list[int]) -> None:
        self.config = config
        self.network = SSLNetwork(backbone, RestorationDecoder(backbone.feature_dim,
                                                               in_channels, size))
        ops = resolve_ops(config.data.augment.preset, config.data.augment.ops)
        self.augment = ssl_augmentation(ops, spatial_dims=len(size), spatial_size=size,
                                        seed=config.train.seed)
        self.corrupt = GenesisCorruption(size, seed=config.train.seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        target = self.augment(images)[0]
        return F.mse_loss(self.network(_layout(self.config, self.corrupt(target))), target)

    def describe(self) -> dict[str, Any]:
        return {"loss": "mse", "corruptions": ["RandHistogramShift", "RandCoarseShuffle",
                                               "RandCoarseDropout (in/out-painting)"]}


def _layout(config: RunConfig, images: torch.Tensor) -> torch.Tensor:
    """``images`` in the memory format the network was put in (``train.channels_last``)."""
    return to_channels_last(images) if config.train.channels_last else images


def _method_step(method: str, config: RunConfig, backbone: Any, in_channels: int,
                 size: list[int]) -> _Contrastive | _Genesis:
    if method == "contrastive":
        return _Contrastive(config, backbone, size)
    return _Genesis(config, backbone, in_channels, size)
