"""medxfer's trainer against a plain hand-written PyTorch loop, in one process.

Both train the same network (same initial weights) on the same pre-loaded tensors for the
same number of steps with AdamW; medxfer's side runs :class:`medxfer.training.trainer.Trainer`
with its hooks, schedule, loss-term bookkeeping and its per-epoch checkpoint. The two are
timed alternately several times and the median ratio is printed.

Usage::

    python benchmarks/train_overhead.py [--steps 60] [--repeats 5] [--size 64]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from medxfer.config import RunConfig
from medxfer.training.amp import Precision
from medxfer.training.trainer import Trainer
from medxfer.models import Backbone, build_network
from medxfer.plugins import create_plugin_manager


def make_network(channels: int = 1) -> nn.Module:
    """A small conv net (4 blocks) as a medxfer TransferNetwork."""
    blocks, width, c = [], 32, channels
    for i in range(4):
        blocks.append(nn.Sequential(nn.Conv2d(c, width, 3, padding=1), nn.BatchNorm2d(width),
                                    nn.ReLU(inplace=True), nn.MaxPool2d(2)))
        c, width = width, width * 2
    body = nn.Sequential(*blocks)
    backbone = Backbone(body, blocks, c, spatial_dims=2, in_channels=channels)
    return build_network(backbone, 2, dropout=0.0)


def make_batches(steps: int, batch: int, size: int) -> list[dict[str, torch.Tensor]]:
    """Pre-loaded batches of random images and labels."""
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(batch, 1, size, size, generator=g),
             "label": torch.randint(0, 2, (batch,), generator=g)} for _ in range(steps)]


def plain_loop(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """The reference: forward, loss, backward, step; nothing else."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    tic = time.perf_counter()
    for batch in batches:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(batch["image"]), batch["label"])
        loss.backward()
        opt.step()
    return time.perf_counter() - tic


def medxfer_loop(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """medxfer's Trainer for one epoch over the same batches (checkpoint included)."""
    config = RunConfig.model_validate({"train": {"epochs": 1, "scheduler": {"name": "constant"},
                                                 "deterministic": False}})
    hooks = create_plugin_manager(load_entry_points=False)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, model, hooks, torch.device("cpu"), Precision(None, "cpu"),
                          Path(run_dir), batches, lambda m: {}, nn.CrossEntropyLoss(),
                          ("train_loss", "min"), progress=False)
        tic = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - tic


def main() -> None:
    """Time both loops alternately and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    torch.manual_seed(0)
    reference = make_network()
    batches = make_batches(args.steps, args.batch, args.size)
    plain_loop(copy.deepcopy(reference), batches[:3])  # warm-up
    plain, ours = [], []
    for i in range(args.repeats):  # alternate which loop goes first: the VM's speed drifts
        if i % 2:
            ours.append(medxfer_loop(copy.deepcopy(reference), batches))
            plain.append(plain_loop(copy.deepcopy(reference), batches))
        else:
            plain.append(plain_loop(copy.deepcopy(reference), batches))
            ours.append(medxfer_loop(copy.deepcopy(reference), batches))
    ratio = statistics.median(ours) / statistics.median(plain)
    best = min(ours) / min(plain)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.steps} steps x batch {args.batch} at {args.size}x{args.size}")
    print(f"plain loop   median {statistics.median(plain):.3f} s")
    print(f"medxfer      median {statistics.median(ours):.3f} s")
    print(f"plain loop   best   {min(plain):.3f} s")
    print(f"medxfer      best   {min(ours):.3f} s")
    print(f"ratio medxfer/plain: median {ratio:.3f}, best {best:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
