"""A short measured throughput probe: seconds per training step and per evaluation forward
of a planned network, on this machine.

The network is the one the run will train (built by its task, without pretrained weights:
they do not change the speed), fed random inputs of the planned size and batch; a few steps
warm up, then a few are timed. The probe takes seconds, not minutes, and its numbers go into
``plan.yaml`` so that the plan's epochs can be checked against the run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any

import torch

from medxfer.config import RunConfig
from medxfer.plugins import Registries
from medxfer.tasks import task_of
from medxfer.training.amp import resolve_device, resolve_precision


@dataclass
class Probe:
    """What the probe measured.

    Attributes:
        step_seconds: One training step (forward, loss, backward, optimizer) of a batch.
        forward_seconds: One evaluation forward of a batch of the same size.
        batch_size: The batch measured.
        input_size: The spatial input size measured.
        device: Where it ran.
    """

    step_seconds: float
    forward_seconds: float
    batch_size: int
    input_size: list[int]
    device: str

    def as_dict(self) -> dict[str, Any]:
        """The measurements, rounded, for ``plan.yaml``."""
        out = asdict(self)
        out["step_seconds"] = round(self.step_seconds, 4)
        out["forward_seconds"] = round(self.forward_seconds, 4)
        return out


def measure(config: RunConfig, registries: Registries, *, in_channels: int, num_classes: int,
            input_size: list[int], batch_size: int, warmup: int = 1, steps: int = 3,
            max_seconds: float = 20.0) -> Probe:
    """Time training steps and evaluation forwards of ``config``'s network.

    Args:
        config: The planned run config (task, backbone, precision, device).
        registries: Plugin registries.
        in_channels: Input channels the network takes.
        num_classes: Classes (segmentation: with background) or 1 for regression.
        input_size: Spatial size of one input (a training patch for segmentation).
        batch_size: Items per step.
        warmup: Untimed steps first.
        steps: Timed steps (fewer when they take longer than ``max_seconds`` together).
        max_seconds: Stop timing once this long was spent on training steps (and again on
            forwards), keeping at least one timed step of each.

    Returns:
        The median seconds per step and per forward.
    """
    task = task_of(config)
    device = resolve_device(config.train.device)
    precision = resolve_precision(config.train.amp, device)
    shape = SimpleNamespace(in_channels=in_channels, spatial_dims=len(input_size),
                            num_classes=num_classes)
    kwargs = {**config.model.backbone.kwargs, "pretrained": "none"}
    model, _ = task.build_network(config, registries, shape, kwargs)
    model.to(device).train()
    loss_fn = task.loss(config, [0, 1], num_classes, device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images = torch.randn(batch_size, in_channels, *input_size, device=device)
    labels = _labels(task, batch_size, num_classes, input_size, device)
    step_times: list[float] = []
    start = time.perf_counter()
    for i in range(warmup + steps):
        if step_times and time.perf_counter() - start > max_seconds:
            break
        tic = time.perf_counter()
        with precision.autocast():
            outputs, _ = model.forward_features(images)
            loss = loss_fn(outputs, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if i >= warmup:
            step_times.append(time.perf_counter() - tic)
    model.eval()
    forward_times: list[float] = []
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(warmup + steps):
            if forward_times and time.perf_counter() - start > max_seconds:
                break
            tic = time.perf_counter()
            with precision.autocast():
                model(images)
            _sync(device)
            if i >= warmup:
                forward_times.append(time.perf_counter() - tic)
    return Probe(sorted(step_times)[len(step_times) // 2],
                 sorted(forward_times)[len(forward_times) // 2], batch_size, list(input_size),
                 str(device))


def _labels(task: Any, n: int, num_classes: int, size: list[int],
            device: torch.device) -> torch.Tensor:
    if task.labels_are_masks:
        return torch.randint(0, num_classes, (n, 1, *size), device=device)
    if task.labels_are_values:
        return torch.randn(n, device=device)
    return torch.randint(0, num_classes, (n,), device=device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
