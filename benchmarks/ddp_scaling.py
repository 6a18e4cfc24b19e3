"""Data-parallel scaling on CPU: 2 DDP processes (gloo) against 1, on the same global batch.

Each setting trains the run's own network on its real data pipeline (built as
``medxfer run`` builds it: with 2 processes every rank reads its share of each epoch and
``train.batch_size`` stays the global batch) through medxfer's DDP step
(:class:`medxfer.engine.distributed.DistributedStep`), and times the same number of
steps after a few untimed ones. Settings, each in its own ``torchrun`` job:

* ``1 process x 1 thread``: the reference;
* ``2 processes x 1 thread``: DDP, what ``medxfer run --nproc 2`` does;
* ``1 process x 2 threads``: the other way to use two cores, for comparison;
* ``2 processes x 1 thread, no sync``: the same two processes without DDP's gradient
  all-reduce (each trains alone on its half of the batch), which separates what the
  communication costs from what two busy processes cost each other on this machine.

It prints samples per second, the speed-up over the reference and the DDP efficiency
(speed-up / processes).

Usage::

    python benchmarks/ddp_scaling.py [CONFIG] [--steps 30] [--warmup 3] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import REPO, build_parts, synchronize

DEFAULT_CONFIG = REPO / "configs" / "pneumoniamnist.yaml"
# (processes, threads per process, gradient sync)
SETTINGS = [(1, 1, True), (2, 1, True), (1, 2, True), (2, 1, False)]


def worker(config: Path, overrides: list[str], steps: int, warmup: int,
           sync: bool = True) -> None:
    """One rank: train ``warmup + steps`` steps; rank 0 prints samples/s as JSON.
    ``sync=False`` skips DDP (no gradient all-reduce) but keeps the data split."""
    from medxfer.engine import distributed as D

    with D.session("cpu"), tempfile.TemporaryDirectory() as tmp:
        parts = build_parts(config, overrides, Path(tmp), device="cpu")
        model, loss_fn, optimizer = parts["model"], parts["loss"], parts["optimizer"]

        def step_fn(batch: dict) -> torch.Tensor:
            outputs, _ = model.forward_features(batch["image"])
            return loss_fn(outputs, batch["label"])

        step = D.DistributedStep(model, step_fn, lambda: optimizer, parts["device"]) \
            if D.is_active() and sync else step_fn
        done, tic, samples = 0, 0.0, 0
        epoch = 0
        while done < warmup + steps:
            sampler = getattr(parts["loader"], "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            for batch in parts["loader"]:
                if done == warmup:
                    D.barrier()
                    tic = time.perf_counter()
                loss = step(batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                done += 1
                if done > warmup:
                    samples += len(batch["image"]) * D.world_size()
                if done == warmup + steps:
                    break
            epoch += 1
        synchronize(parts["device"])
        D.barrier()
        seconds = time.perf_counter() - tic
        if D.is_main():
            print("RESULT " + json.dumps({"samples_per_s": samples / seconds,
                                          "seconds": seconds, "samples": samples}), flush=True)


def launch(config: Path, overrides: list[str], steps: int, warmup: int, nproc: int,
           threads: int, sync: bool = True) -> dict:
    """Run one setting under torchrun and return rank 0's result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(Path(__file__).resolve()), "--worker",
           str(config), "--steps", str(steps), "--warmup", str(warmup),
           "--set", f"train.threads={threads}"] + ([] if sync else ["--no-sync"])
    for item in overrides:
        cmd += ["--set", item]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{nproc} x {threads} failed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    """Run every setting and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-sync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.config, args.overrides, args.steps, args.warmup, sync=not args.no_sync)
        return 0
    print(f"{args.config.name}: {args.steps} timed steps after {args.warmup}, torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs, gloo")
    print(f"{'setting':<26} {'samples/s':>10} {'speed-up':>9} {'efficiency':>10}")
    base = None
    for nproc, threads, sync in SETTINGS:
        r = launch(args.config, args.overrides, args.steps, args.warmup, nproc, threads, sync)
        base = base or r["samples_per_s"]
        speedup = r["samples_per_s"] / base
        label = f"{nproc} process{'es' if nproc > 1 else ''} x {threads} thread" + \
            ("s" if threads > 1 else "") + ("" if sync else ", no sync")
        print(f"{label:<26} {r['samples_per_s']:>10.1f} {speedup:>8.2f}x "
              f"{speedup / nproc:>10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
