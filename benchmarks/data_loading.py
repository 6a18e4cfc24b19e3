"""Data-loading overhead: training steps fed by the real pipeline vs by pre-loaded tensors.

For each config, the run's own data pipeline is built exactly as ``medxfer run`` builds it
(:func:`medxfer.data.load_data` and :func:`medxfer.engine.loaders.make_loader`: reading,
cached preprocessing, seeded augmentation, workers as configured) together with the run's
network, loss and AdamW. Then, in one process, the same number of training steps is timed
twice, alternately and several times:

* **pipeline**: batches drawn from a fresh iterator over the training loader (worker
  start-up, augmentation and collation included), moved to the device, one step each;
* **pre-loaded**: the same steps on batches drawn once beforehand and kept in memory.

The printed ratio ``pipeline / pre-loaded`` is the cost of data loading on top of the
compute; 1.00 means data loading is completely hidden. Memory caches are filled before
timing (that happens once per run, before the first epoch).

Usage::

    python benchmarks/data_loading.py [CONFIG ...] [--steps 20] [--repeats 3]
        [--set KEY=VALUE ...] [--threads N]

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


def time_pipeline(parts: dict[str, Any], steps: int) -> float:
    """Seconds for ``steps`` steps drawn from a fresh iterator over the real loader."""
    tic = time.perf_counter()
    done = 0
    while done < steps:
        for batch in parts["loader"]:
            train_step(parts, batch)
            done += 1
            if done == steps:
                break
    synchronize(parts["device"])
    return time.perf_counter() - tic


def time_preloaded(parts: dict[str, Any], batches: list[dict[str, Any]]) -> float:
    """Seconds for the same steps on batches already in memory."""
    tic = time.perf_counter()
    for batch in batches:
        train_step(parts, batch)
    synchronize(parts["device"])
    return time.perf_counter() - tic


def measure(config_path: Path | None, overrides: list[str], steps: int,
            repeats: int) -> dict[str, Any]:
    """Median seconds of both feeds and their ratio for one config."""
    with tempfile.TemporaryDirectory() as tmp:
        parts = build_parts(config_path, overrides, Path(tmp))
        batches = preload(parts["loader"], steps)  # also fills any lazy cache
        time_preloaded(parts, batches[:2])  # warm-up
        piped, pre = [], []
        for i in range(repeats):  # alternate the order: the machine's speed drifts
            if i % 2:
                pre.append(time_preloaded(parts, batches))
                piped.append(time_pipeline(parts, steps))
            else:
                piped.append(time_pipeline(parts, steps))
                pre.append(time_preloaded(parts, batches))
        cfg = parts["config"]
    p, q = statistics.median(piped), statistics.median(pre)
    return {"config": str(config_path or "(embedded sample)"), "pipeline_s": p,
            "preloaded_s": q, "ratio": p / q, "batch": cfg.train.batch_size,
            "workers": cfg.data.num_workers, "device": str(parts["device"])}


def main(argv: list[str] | None = None) -> int:
    """Measure each config and print a table of ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", type=Path)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=None)
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
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{args.steps} steps, median of {args.repeats}")
    print(f"{'config':<32} {'device':<6} {'batch':>5} {'workers':>7} "
          f"{'pipeline s':>10} {'preloaded s':>11} {'ratio':>6}")
    worst = 0.0
    for path in configs:
        r = measure(path, args.overrides, args.steps, args.repeats)
        worst = max(worst, r["ratio"])
        print(f"{Path(r['config']).name:<32} {r['device']:<6} {r['batch']:>5} {r['workers']:>7} "
              f"{r['pipeline_s']:>10.3f} {r['preloaded_s']:>11.3f} {r['ratio']:>6.3f}",
              flush=True)
    print(f"worst ratio pipeline/pre-loaded: {worst:.3f} (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
