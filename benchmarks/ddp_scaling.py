"""Data-parallel scaling on CPU: 2 DDP processes (gloo) against 1, on the same global batch.

Each setting trains the run's own network on its real data pipeline (built as
``medxfer run`` builds it: with 2 processes every rank reads its share of each epoch and
``train.batch_size`` stays the global batch) through medxfer's DDP step
(:class:`medxfer.training.distributed.DistributedStep`), and times the same number of
steps after a few untimed ones. Settings, each in its own ``torchrun`` job:

* ``1 process x 1 thread``: the reference;
* ``2 processes x 1 thread``: DDP, what ``medxfer run --nproc 2`` does;
* ``1 process x 2 threads``: the other way to use two cores, for comparison;
* ``2 processes x 1 thread, no sync``: the same two processes without DDP's gradient
  all-reduce (each trains alone on its half of the batch), which separates what the
  communication costs from what two busy processes cost each other on this machine;
* ``2 processes x 1 thread, barrier only``: no gradient all-reduce either, but the two
  processes wait for each other after every step (``torch.distributed.barrier``), as DDP's
  all-reduce makes them. Between this row and the last, the cost of waiting for the slower
  process each step; between this row and DDP's, what moving the gradients costs.

It prints samples per second, the speed-up over the reference and the DDP efficiency
(speed-up / processes), then the two-process step times with DDP and barrier only beside
what one gloo all-reduce of all the trainable parameters' gradients takes on its own.

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
# (processes, threads per process, how the processes synchronise)
SYNC_MODES = ("ddp", "none", "barrier")
SETTINGS = [(1, 1, "ddp"), (2, 1, "ddp"), (1, 2, "ddp"), (2, 1, "none"), (2, 1, "barrier")]
SYNC_LABELS = {"ddp": "", "none": ", no sync", "barrier": ", barrier only"}


def worker(config: Path, overrides: list[str], steps: int, warmup: int,
           sync: str = "ddp") -> None:
    """One rank: train ``warmup + steps`` steps; rank 0 prints samples/s as JSON.

    ``sync``: ``ddp`` (gradients all-reduced by DDP), ``none`` (no DDP, but the data split
    kept) or ``barrier`` (no DDP; the ranks wait for each other after every step)."""
    from medxfer.training import distributed as D

    with D.session("cpu"), tempfile.TemporaryDirectory() as tmp:
        parts = build_parts(config, overrides, Path(tmp), device="cpu")
        model, loss_fn, optimizer = parts["model"], parts["loss"], parts["optimizer"]

        def step_fn(batch: dict) -> torch.Tensor:
            outputs, _ = model.forward_features(batch["image"])
            return loss_fn(outputs, batch["label"])

        step = D.DistributedStep(model, step_fn, lambda: optimizer, parts["device"]) \
            if D.is_active() and sync == "ddp" else step_fn
        wait = D.is_active() and sync == "barrier"
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
                if wait:
                    D.barrier()
                done += 1
                if done > warmup:
                    samples += len(batch["image"]) * D.world_size()
                if done == warmup + steps:
                    break
            epoch += 1
        synchronize(parts["device"])
        D.barrier()
        seconds = time.perf_counter() - tic
        result = {"samples_per_s": samples / seconds, "seconds": seconds, "samples": samples,
                  "step_ms": 1000 * seconds / steps}
        if wait:  # what one all-reduce of every gradient costs on its own
            result.update(allreduce_timing(model, parts["device"]))
        if D.is_main():
            print("RESULT " + json.dumps(result), flush=True)


def allreduce_timing(model: torch.nn.Module, device: torch.device, repeats: int = 20) -> dict:
    """Milliseconds per all-reduce of one flat fp32 tensor the size of the model's
    trainable parameters (what DDP moves each step), with nothing else running."""
    from medxfer.training import distributed as D

    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    flat = torch.ones(count, device=device)
    for _ in range(3):
        torch.distributed.all_reduce(flat)
    D.barrier()
    tic = time.perf_counter()
    for _ in range(repeats):
        torch.distributed.all_reduce(flat)
    synchronize(device)
    D.barrier()
    return {"gradients": count, "allreduce_ms": 1000 * (time.perf_counter() - tic) / repeats}


def launch(config: Path, overrides: list[str], steps: int, warmup: int, nproc: int,
           threads: int, sync: str = "ddp") -> dict:
    """Run one setting under torchrun and return rank 0's result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(Path(__file__).resolve()), "--worker",
           str(config), "--steps", str(steps), "--warmup", str(warmup),
           "--set", f"train.threads={threads}", "--sync", sync]
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
    parser.add_argument("--sync", choices=SYNC_MODES, default="ddp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.config, args.overrides, args.steps, args.warmup, sync=args.sync)
        return 0
    print(f"{args.config.name}: {args.steps} timed steps after {args.warmup}, torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs, gloo")
    print(f"{'setting':<37} {'samples/s':>10} {'speed-up':>9} {'efficiency':>10}")
    base, steps = None, {}
    for nproc, threads, sync in SETTINGS:
        r = launch(args.config, args.overrides, args.steps, args.warmup, nproc, threads, sync)
        base = base or r["samples_per_s"]
        speedup = r["samples_per_s"] / base
        label = f"{nproc} process{'es' if nproc > 1 else ''} x {threads} thread" + \
            ("s" if threads > 1 else "") + SYNC_LABELS[sync]
        efficiency = f"{speedup / nproc:.2f}" if threads == 1 else ""  # per process
        print(f"{label:<37} {r['samples_per_s']:>10.1f} {speedup:>8.2f}x {efficiency:>10}",
              flush=True)
        if nproc > 1 and threads == 1:
            steps[sync] = r
    if "barrier" in steps and "ddp" in steps:
        alone = steps["barrier"]
        print(f"2-process step: {steps['ddp']['step_ms']:.1f} ms with DDP, "
              f"{alone['step_ms']:.1f} ms barrier only; one gloo all-reduce of the "
              f"{alone['gradients']:,} gradients on its own: {alone['allreduce_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
