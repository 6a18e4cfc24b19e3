"""Data-loading overhead: training steps fed by the real pipeline vs by pre-loaded tensors.

For each config, the run's own data pipeline is built exactly as ``medxfer run`` builds it
(:func:`medxfer.data.load_data` and :func:`medxfer.training.loaders.make_loader`: reading,
cached preprocessing, seeded augmentation, workers as configured) together with the run's
network, loss and AdamW. Then, in one process, blocks of training steps are timed
alternately, several times each:

* **pipeline**: batches drawn from the training loader (a new epoch's iterator, with any
  worker start-up, whenever one ends; augmentation and collation included), moved to the
  device, one step each;
* **pre-loaded**: the same number of steps on batches drawn once beforehand and kept in
  memory.

The printed ratio ``pipeline / pre-loaded`` (the median over pairs of neighbouring blocks,
which cancels this VM's drift in speed) is the cost of data loading on top of the compute;
1.00 means data loading is completely hidden.

A block is 5 steps, or one whole epoch where an epoch has at most 25 steps (BreastMNIST:
9). Every epoch starts a new iterator, whose first batch nothing has prepared ahead: in
5-step blocks only every other block of a 9-step epoch pays for it, and the median then
lands on either kind of block from one run to the next (1.03 to 1.13 on the same code).
A whole epoch per block is also what the target is stated in, and a background loader
thread has then finished its epoch when the block ends, so none of its work spills into
the next pre-loaded block. Memory caches are filled before
timing (that happens once per run, before the first epoch), and one whole epoch is drawn
from the loader first, so that what a run keeps from its first epoch on (each slice's
foreground/background indices for patch draws) is kept here too: the ratio is that of
the epochs after the first. ``--cold`` skips that epoch (the first epoch's cost).

Usage::

    python benchmarks/data_loading.py [CONFIG ...] [--steps N] [--repeats 9]
        [--set KEY=VALUE ...] [--threads N] [--cold]

With no CONFIG, every shipped training config whose data is present is measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _common import (REPO, build_parts, config_data_present, preload, synchronize,
                     train_step)

SHIPPED = ["pneumoniamnist.yaml", "breastmnist.yaml", "adrenalmnist3d.yaml",
           "hippocampus_3d.yaml", "hippocampus_2d.yaml", "sample_segmentation_2d.yaml",
           "sample_segmentation_3d.yaml"]


class _Pipeline:
    """Batches from the real training loader, a fresh epoch (iterator) whenever one ends."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.batches = iter(loader)

    def next(self) -> Any:
        batch = next(self.batches, None)
        if batch is None:
            self.batches = iter(self.loader)
            batch = next(self.batches)
        return batch


def time_pipeline(parts: dict[str, Any], pipeline: _Pipeline, steps: int) -> float:
    """Seconds for ``steps`` steps drawn from the real loader (augmentation, collation and
    any new epoch's iterator included)."""
    tic = time.perf_counter()
    for _ in range(steps):
        train_step(parts, pipeline.next())
    synchronize(parts["device"])
    return time.perf_counter() - tic


def time_preloaded(parts: dict[str, Any], batches: list[dict[str, Any]]) -> float:
    """Seconds for the same number of steps on batches already in memory."""
    tic = time.perf_counter()
    for batch in batches:
        train_step(parts, batch)
    synchronize(parts["device"])
    return time.perf_counter() - tic


BLOCK_STEPS = 5
WHOLE_EPOCH_STEPS = 25  # an epoch this short is timed whole: one block is one epoch


def block_steps(loader: Any, steps: int | None) -> int:
    """Steps per timed block: ``steps`` when given, else one whole epoch of ``loader`` when
    it has at most :data:`WHOLE_EPOCH_STEPS` steps, else :data:`BLOCK_STEPS`."""
    if steps:
        return steps
    length = len(loader)
    return length if 0 < length <= WHOLE_EPOCH_STEPS else BLOCK_STEPS


def measure(config_path: Path | None, overrides: list[str], steps: int | None,
            repeats: int, cold: bool = False) -> dict[str, Any]:
    """Both feeds in alternating blocks of ``steps`` steps (default: :func:`block_steps`),
    ``repeats`` blocks each.

    This VM's speed drifts by 10-30% within seconds, so the ratio is the median of the
    per-block ratios (each pipeline block against the pre-loaded block next to it), and
    the first block of each feed is a warm-up that is not counted.
    """
    with tempfile.TemporaryDirectory() as tmp:
        parts = build_parts(config_path, overrides, Path(tmp))
        steps = block_steps(parts["loader"], steps)
        batches = preload(parts["loader"], steps)  # also fills any lazy cache
        if not cold:
            for _ in parts["loader"]:  # an epoch, as a run has drawn after its first
                pass
        pipeline = _Pipeline(parts["loader"])
        time_preloaded(parts, batches)  # warm-up
        time_pipeline(parts, pipeline, steps)
        piped, pre, ratios = [], [], []
        for i in range(repeats):
            if i % 2:
                q = time_preloaded(parts, batches)
                p = time_pipeline(parts, pipeline, steps)
            else:
                p = time_pipeline(parts, pipeline, steps)
                q = time_preloaded(parts, batches)
            piped.append(p)
            pre.append(q)
            ratios.append(p / q)
        cfg = parts["config"]
    return {"config": str(config_path or "(embedded sample)"),
            "pipeline_s": statistics.median(piped), "preloaded_s": statistics.median(pre),
            "ratio": statistics.median(ratios), "batch": cfg.train.batch_size,
            "workers": cfg.data.num_workers, "device": str(parts["device"]), "steps": steps,
            "augment_on": cfg.data.augment_on, "loader": cfg.data.loader}


def main(argv: list[str] | None = None) -> int:
    """Measure each config and print a table of ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument("--steps", type=int, default=None,
                        help=f"steps per timed block (default: {BLOCK_STEPS}, or a whole epoch "
                        f"of at most {WHOLE_EPOCH_STEPS} steps)")
    parser.add_argument("--repeats", type=int, default=9, help="timed blocks of each feed")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cold", action="store_true",
                        help="time without drawing a whole epoch first (the first epoch)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = list(args.configs)
    if not configs:
        for name in SHIPPED:
            path = REPO / "configs" / name
            if config_data_present(path):
                configs.append(path)
            else:
                print(f"skip {name}: its data is not present")
    blocks = (f"{args.steps} steps" if args.steps else
              f"{BLOCK_STEPS} steps (or a whole epoch of at most {WHOLE_EPOCH_STEPS})")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.repeats} alternating blocks of {blocks}, median block ratio, "
          f"{'first epoch (--cold)' if args.cold else 'after one epoch'}")
    print(f"{'config':<32} {'augment':<7} {'loader':<6} {'device':<6} {'batch':>5} {'workers':>7} "
          f"{'steps':>5} {'pipeline s':>10} {'preloaded s':>11} {'ratio':>6}")
    worst = 0.0
    for path in configs:
        r = measure(path, args.overrides, args.steps, args.repeats, args.cold)
        worst = max(worst, r["ratio"])
        print(f"{Path(r['config']).name:<32} {r['augment_on']:<7} {r['loader']:<6} "
              f"{r['device']:<6} {r['batch']:>5} {r['workers']:>7} {r['steps']:>5} "
              f"{r['pipeline_s']:>10.3f} {r['preloaded_s']:>11.3f} {r['ratio']:>6.3f}",
              flush=True)
    print(f"worst ratio pipeline/pre-loaded: {worst:.3f} (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
