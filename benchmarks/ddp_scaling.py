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
  process each step; between this row and DDP's, what moving the gradients costs;
* ``2 processes x 1 thread, DDP ...``: DDP's gradient synchronisation tuned
  (``train.ddp``): buckets of 1 and 100 MiB instead of 25, gradients as views into the
  buckets, a static graph. Each row sets all three options, so it differs from torch's
  defaults in what its label names, whatever the config sets.

It prints samples per second, the speed-up over the reference and the DDP efficiency
(speed-up / processes), then the two-process step times with DDP and barrier only beside
what one gloo all-reduce of all the trainable parameters' gradients takes on its own.
With ``--rounds N`` every setting runs N times, round after round (so that a machine's
drift reaches all settings alike); each speed-up is against the same round's reference,
and the table gives the median samples/s and the speed-ups' range. A tuning row's last
column is its samples/s over the plain DDP row's of the same round (its range over the
rounds). ``--tuning`` runs only the reference, DDP and the tuning rows.

Separate jobs drift with whatever else the machine runs. ``--paired`` compares the DDP
options inside one 2-process job instead: plain DDP and each tuning in turn, in blocks of
``--steps`` timed steps (after ``--warmup`` untimed ones that build the block's own DDP
wrapper), ``--rounds`` times, the order rotated each round; each tuning's speed is the
plain block's time over its own in the same round.

Usage::

    python benchmarks/ddp_scaling.py [CONFIG] [--steps 30] [--warmup 3] [--rounds 1]
        [--tuning | --paired] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch

from _common import REPO, build_parts, synchronize

DEFAULT_CONFIG = REPO / "configs" / "pneumoniamnist.yaml"
# (processes, threads per process, how the processes synchronise, train.ddp options)
SYNC_MODES = ("ddp", "none", "barrier", "paired")
SYNC_LABELS = {"ddp": "", "none": ", no sync", "barrier": ", barrier only"}
#: torch's own DistributedDataParallel defaults, what a tuning row is labelled against.
TORCH_DDP = {"bucket_cap_mb": 25, "gradient_as_bucket_view": False, "static_graph": False}
TUNINGS = [{"bucket_cap_mb": 1}, {"bucket_cap_mb": 100}, {"gradient_as_bucket_view": True},
           {"static_graph": True}, {"gradient_as_bucket_view": True, "static_graph": True}]
SETTINGS = [(1, 1, "ddp", None), (2, 1, "ddp", None), (1, 2, "ddp", None),
            (2, 1, "none", None), (2, 1, "barrier", None)] + \
    [(2, 1, "ddp", {**TORCH_DDP, **tuning}) for tuning in TUNINGS]


def ddp_overrides(options: dict | None) -> list[str]:
    """``--set`` items for the ``train.ddp`` options of a setting (none: the config's)."""
    return [f"train.ddp.{key}={json.dumps(value)}" for key, value in (options or {}).items()]


def setting_label(nproc: int, threads: int, sync: str, options: dict | None) -> str:
    """How the table names a setting, e.g. ``2 processes x 1 thread, DDP bucket 1 MiB``."""
    label = f"{nproc} process{'es' if nproc > 1 else ''} x {threads} thread" + \
        ("s" if threads > 1 else "") + SYNC_LABELS[sync]
    if options is None:
        return label
    changed = [f"bucket {options['bucket_cap_mb']} MiB"
               if key == "bucket_cap_mb" else key
               for key, value in options.items() if value != TORCH_DDP[key]]
    return f"{label}, DDP {' + '.join(changed) or 'as torch'}"


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

        step = D.DistributedStep(model, step_fn, lambda: optimizer, parts["device"],
                                 parts["config"].train.ddp) \
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


def endless_batches(loader: Any) -> Iterator[dict]:
    """The loader's batches, epoch after epoch (each reshuffled for its epoch, as in a run)."""
    epoch = 0
    while True:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def paired_worker(config: Path, overrides: list[str], steps: int, warmup: int,
                  rounds: int) -> None:
    """One rank of ``--paired``: plain DDP and each of :data:`TUNINGS` in turn, each block
    with its own DDP wrapper; rank 0 prints every block's seconds as JSON."""
    from medxfer.config import DDPConfig
    from medxfer.training import distributed as D

    with D.session("cpu"), tempfile.TemporaryDirectory() as tmp:
        parts = build_parts(config, overrides, Path(tmp), device="cpu")
        model, loss_fn, optimizer = parts["model"], parts["loss"], parts["optimizer"]

        def step_fn(batch: dict) -> torch.Tensor:
            outputs, _ = model.forward_features(batch["image"])
            return loss_fn(outputs, batch["label"])

        batches = endless_batches(parts["loader"])
        variants = [None] + [{**TORCH_DDP, **tuning} for tuning in TUNINGS]
        seconds: list[list[float]] = [[] for _ in variants]
        for round_index in range(rounds):
            order = list(range(len(variants)))
            order = order[round_index % len(order):] + order[:round_index % len(order)]
            for i in order:
                options = variants[i]
                step = D.DistributedStep(
                    model, step_fn, lambda: optimizer, parts["device"],
                    parts["config"].train.ddp if options is None else DDPConfig(**options))
                for n in range(warmup + steps):
                    if n == warmup:
                        D.barrier()
                        tic = time.perf_counter()
                    loss = step(next(batches))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                D.barrier()
                seconds[i].append(time.perf_counter() - tic)
                del step
                gc.collect()  # the block's DDP reducer and its hooks go before the next
        if D.is_main():
            print("RESULT " + json.dumps({"seconds": seconds}), flush=True)


def print_paired(seconds: list[list[float]], steps: int) -> None:
    """The ``--paired`` table: ms per step, and speed against plain DDP in the same round."""
    variants = [None] + [{**TORCH_DDP, **tuning} for tuning in TUNINGS]
    print(f"{'setting (one 2-process job, alternating blocks)':<66} {'ms/step':>8} "
          f"{'vs DDP, median':>15} {'range':>12}")
    for options, times in zip(variants, seconds):
        ratios = [plain / own for plain, own in zip(seconds[0], times)]
        label = setting_label(2, 1, "ddp", options)
        print(f"{label:<66} {1000 * statistics.median(times) / steps:>8.1f} "
              f"{statistics.median(ratios):>14.3f}x {_spread(ratios):>12}")


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
           threads: int, sync: str = "ddp", rounds: int = 1) -> dict:
    """Run one setting under torchrun and return rank 0's result."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(Path(__file__).resolve()), "--worker",
           str(config), "--steps", str(steps), "--warmup", str(warmup),
           "--set", f"train.threads={threads}", "--sync", sync, "--rounds", str(rounds)]
    for item in overrides:
        cmd += ["--set", item]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"{nproc} x {threads} failed (exit {done.returncode}):\n"
                         f"{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _spread(values: list[float]) -> str:
    """``1.23x`` for one value, ``1.20-1.26x`` (min-max) for several."""
    low, high = min(values), max(values)
    return f"{low:.2f}x" if len(values) == 1 else f"{low:.2f}-{high:.2f}x"


def main(argv: list[str] | None = None) -> int:
    """Run every setting (``--rounds`` times) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tuning", action="store_true",
                        help="only the reference, DDP and DDP's tuning rows")
    parser.add_argument("--base", action="store_true",
                        help="only the settings without DDP's tuning rows (1 or 2 processes, "
                        "threads, no sync, barrier only)")
    parser.add_argument("--paired", action="store_true",
                        help="DDP's tunings against plain DDP, alternating in one job")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sync", choices=SYNC_MODES, default="ddp", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker and args.sync == "paired":
        paired_worker(args.config, args.overrides, args.steps, args.warmup, args.rounds)
        return 0
    if args.worker:
        worker(args.config, args.overrides, args.steps, args.warmup, sync=args.sync)
        return 0
    print(f"{args.config.name}: {args.steps} timed steps after {args.warmup}, torch "
          f"{torch.__version__}, {os.cpu_count()} CPUs, gloo, {args.rounds} round(s)")
    if args.paired:
        r = launch(args.config, args.overrides, args.steps, args.warmup, 2, 1, "paired",
                   rounds=args.rounds)
        print_paired(r["seconds"], args.steps)
        return 0
    settings = [s for s in SETTINGS if not args.tuning or s[2] == "ddp" and s[1] == 1]
    if args.base:
        settings = [s for s in settings if s[3] is None]
    rates: dict[int, list[float]] = {i: [] for i in range(len(settings))}
    speedups: dict[int, list[float]] = {i: [] for i in range(len(settings))}
    steps: dict[str, list[dict]] = {"ddp": [], "barrier": []}
    for round_index in range(args.rounds):
        for i, (nproc, threads, sync, options) in enumerate(settings):
            r = launch(args.config, args.overrides + ddp_overrides(options), args.steps,
                       args.warmup, nproc, threads, sync)
            rates[i].append(r["samples_per_s"])
            speedups[i].append(r["samples_per_s"] / rates[0][-1])
            print(f"  round {round_index + 1}: "
                  f"{setting_label(nproc, threads, sync, options):<66} "
                  f"{r['samples_per_s']:>8.1f} samples/s {speedups[i][-1]:>6.2f}x", flush=True)
            if nproc > 1 and threads == 1 and options is None and sync in steps:
                steps[sync].append(r)
    ddp_row = settings.index((2, 1, "ddp", None))
    print(f"{'setting':<66} {'samples/s':>10} {'speed-up':>12} {'efficiency':>10} "
          f"{'vs DDP':>12}")
    for i, (nproc, threads, sync, options) in enumerate(settings):
        # per process, from the median speed-up
        efficiency = f"{statistics.median(speedups[i]) / nproc:.2f}" if threads == 1 else ""
        against_ddp = _spread([a / b for a, b in zip(rates[i], rates[ddp_row])]) \
            if options else ""
        print(f"{setting_label(nproc, threads, sync, options):<66} "
              f"{statistics.median(rates[i]):>10.1f} {_spread(speedups[i]):>12} "
              f"{efficiency:>10} {against_ddp:>12}")
    for ddp, alone in zip(steps["ddp"], steps["barrier"]):
        print(f"2-process step: {ddp['step_ms']:.1f} ms with DDP, "
              f"{alone['step_ms']:.1f} ms barrier only; one gloo all-reduce of the "
              f"{alone['gradients']:,} gradients on its own: {alone['allreduce_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
