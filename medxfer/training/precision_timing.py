"""The measurement behind ``train.amp: auto``: training steps of a run's own network on a
batch of its own input, timed in each precision (see
:mod:`medxfer.training.precision_probe`).

Every variant trains a copy of the network with a fresh AdamW, so the run's weights are
untouched, and the random streams the run draws from (torch, NumPy, Python, and the
training loader's) are restored afterwards (:func:`preserved_random_state`): a run trains
the same whether it probed or found the choice cached.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from medxfer.training.amp import to_channels_last
from medxfer.training.checkpoints import rng_state, set_rng_state
from medxfer.training.compiling import begin_step, compile_network
from medxfer.training.loaders import data_random_state, set_data_random_state
from medxfer.training.precision_probe import precision_of

#: Untimed steps first (cuDNN's algorithm search, compilation), then the timed ones.
WARMUP_STEPS = 3
TIMED_STEPS = 10


@contextmanager
def preserved_random_state(loader: Any = None) -> Iterator[None]:
    """Restore the global random streams and ``loader``'s (shuffle generator, augmentation)
    when the body ends."""
    saved, saved_data = rng_state(), data_random_state([loader])
    try:
        yield
    finally:
        set_rng_state(saved)
        set_data_random_state([loader], saved_data)


def first_training_batch(loader: Any, device: torch.device) -> tuple[torch.Tensor, Any]:
    """The images and labels of one batch of ``loader``'s first items, as the loader
    batches them (augmented, patches cut), read in this process without touching the
    loader's own iteration; call it inside :func:`preserved_random_state`."""
    reader = DataLoader(loader.dataset, batch_size=loader.batch_size,
                        collate_fn=loader.collate_fn, num_workers=0)
    batch = next(iter(reader))
    return (batch["image"].to(device, non_blocking=True),
            batch["label"].to(device, non_blocking=True))


def training_step_timer(model: nn.Module, loss_fn: Callable[..., torch.Tensor],
                        images: torch.Tensor, labels: Any, device: torch.device, *,
                        channels_last: bool = False, compile_setting: bool | str = False,
                        warmup: int = WARMUP_STEPS, steps: int = TIMED_STEPS
                        ) -> Callable[[str], float]:
    """A ``measure(variant)`` for :func:`~medxfer.training.precision_probe.choose_precision`:
    the training samples per second of a copy of ``model`` in that precision.

    Each step is a whole training step as the trainer takes it: forward (autocast),
    loss, backward (through a GradScaler for fp16), AdamW step.

    Args:
        model: The run's network on ``device`` (in its memory format; not compiled).
        loss_fn: The task loss.
        images: One training batch ``[B, C, *spatial]`` on ``device``.
        labels: Its labels on ``device``.
        device: The training device.
        channels_last: Feed the images in channels-last layout (``train.channels_last``).
        compile_setting: ``train.compile`` of the run, applied to each copy.
        warmup: Untimed steps first.
        steps: Timed steps.
    """
    if channels_last:
        images = to_channels_last(images)

    def measure(variant: str) -> float:
        precision = precision_of(variant, device)
        net = copy.deepcopy(model).train()
        compile_network(net, compile_setting)
        optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad],
                                      lr=1e-4)
        scaler = precision.scaler()
        try:
            tic = time.perf_counter()
            for step in range(warmup + steps):
                if step == warmup:
                    _synchronize(device)
                    tic = time.perf_counter()
                begin_step(net)
                with precision.autocast():
                    outputs, _ = net.forward_features(images)
                    loss = loss_fn(outputs, labels)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            _synchronize(device)
            seconds = time.perf_counter() - tic
        finally:
            del net, optimizer
            if device.type == "cuda":
                torch.cuda.empty_cache()
        return steps * len(images) / max(seconds, 1e-9)

    return measure


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
