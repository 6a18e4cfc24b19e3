"""Mixed precision, ``torch.compile`` and channels-last against plain fp32, in one process.

The run's own network, loss and data (built as ``medxfer run`` builds them, default the
Hippocampus 3D config) train for the same pre-loaded batches in each variant, each from a
copy of the same initial weights with a fresh AdamW, so that only the arithmetic differs:

* ``fp32``: eager, no autocast (the reference; PyTorch's default lets cuDNN run fp32
  convolutions as TF32 on Ampere and later GPUs, as ``medxfer run`` with ``amp: off`` does);
* ``fp32_no_tf32``: fp32 with TF32 switched off for convolutions and matrix products (CUDA
  only; not in the default list);
* ``fp16``: CUDA autocast to float16 with a GradScaler (CUDA only);
* ``bf16``: autocast to bfloat16 (CUDA, or CPU where the CPU supports it);
* ``compile``: ``torch.compile`` of the network with the device's AMP (fp16 on CUDA,
  fp32 on CPU); its compilation happens in the warm-up steps, which are not timed;
* ``compile_cudagraphs``: as ``compile`` with ``mode="reduce-overhead"`` (CUDA graphs,
  which remove the per-kernel launch cost of small batches; CUDA only; not in the default
  list), and ``fp32_cudagraphs``, the same in fp32 (so that AMP's own share shows);
* ``channels_last``: channels-last memory format (``channels_last_3d`` for 3D networks)
  with the device's AMP, as ``train.channels_last: true``; ``fp32_channels_last`` the same
  in fp32 (not in the default list).

A variant that fails (e.g. a compiler error) prints its error and the others still run.

It prints samples per second, the peak GPU memory of each variant and the ratio to fp32,
then the precision ``train.amp: auto`` (the default) would choose from those timings (the
run's probe applies the same rule to its own shorter timing), and how that compares with the
fastest variant.

Usage::

    python benchmarks/amp_compile.py [CONFIG] [--steps 30] [--warmup 5] [--device cuda]
        [--variants fp32,fp16,bf16,compile,channels_last] [--set KEY=VALUE ...]

(``--set train.batch_size=N`` measures another batch size.)
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _common import REPO, build_parts, preload, synchronize, train_step

DEFAULT_CONFIG = REPO / "configs" / "hippocampus_3d.yaml"
DEFAULT_VARIANTS = ["fp32", "fp16", "bf16", "compile", "channels_last"]
ALL_VARIANTS = DEFAULT_VARIANTS + ["fp32_no_tf32", "compile_cudagraphs", "fp32_cudagraphs",
                                   "fp32_channels_last"]


def variant_settings(name: str, device: torch.device, spatial_dims: int) -> dict[str, Any] | None:
    """What a variant changes, or None when it does not apply on this device or network."""
    from medxfer.training.amp import Precision

    cuda = device.type == "cuda"
    amp = Precision(torch.float16 if cuda else None, device.type)
    if name == "fp32":
        return {"precision": Precision(None, device.type)}
    if name == "fp32_no_tf32":
        return {"precision": Precision(None, "cuda"), "tf32": False} if cuda else None
    if name == "fp16":
        return {"precision": Precision(torch.float16, "cuda")} if cuda else None
    if name == "bf16":
        if cuda and not torch.cuda.is_bf16_supported():
            return None
        return {"precision": Precision(torch.bfloat16, device.type)}
    if name == "compile":
        return {"precision": amp, "compile": True}
    if name == "compile_cudagraphs":
        return {"precision": amp, "compile": "reduce-overhead"} if cuda else None
    if name == "fp32_cudagraphs":
        return {"precision": Precision(None, "cuda"), "compile": "reduce-overhead"} if cuda else None
    if name == "channels_last":
        return {"precision": amp, "channels_last": True}
    if name == "fp32_channels_last":
        return {"precision": Precision(None, device.type), "channels_last": True}
    raise SystemExit(f"--variants: unknown variant {name!r}; choose from {', '.join(ALL_VARIANTS)}")


def run_variant(parts: dict[str, Any], reference: torch.nn.Module,
                batches: list[dict[str, Any]], settings: dict[str, Any],
                warmup: int) -> dict[str, float]:
    """Samples per second and peak memory of one variant on ``batches``."""
    from medxfer.training.amp import channels_last_format

    model = copy.deepcopy(reference)
    if settings.get("channels_last"):
        model = model.to(memory_format=channels_last_format(parts["spatial_dims"]))
    local = dict(parts, model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4))
    mode = settings.get("compile")
    forward = (torch.compile(model.forward_features, mode=mode if isinstance(mode, str) else None)
               if mode else None)
    precision = settings["precision"]
    scaler = torch.amp.GradScaler("cuda") if precision.needs_scaler else None
    kwargs = {"precision": precision, "scaler": scaler, "forward": forward,
              "channels_last": bool(settings.get("channels_last"))}
    if mode == "reduce-overhead":  # each step is a new CUDA-graph replay (outputs not kept)
        kwargs["before"] = torch.compiler.cudagraph_mark_step_begin
    device = parts["device"]
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    if "tf32" in settings:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = settings["tf32"]
    try:
        for batch in warmup_batches(batches, warmup):
            train_step(local, batch, **kwargs)
        synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        tic = time.perf_counter()
        samples = 0
        for batch in batches[warmup:]:
            train_step(local, batch, **kwargs)
            samples += len(batch["image"])
        synchronize(device)
        seconds = time.perf_counter() - tic
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"samples_per_s": samples / seconds, "peak_mib": peak}


def warmup_batches(batches: list[dict[str, Any]], warmup: int) -> list[dict[str, Any]]:
    """The first ``warmup`` batches, then one of each batch shape the timed steps meet that
    those did not (a smaller last batch), so that no compilation happens while timing."""
    chosen = list(batches[:warmup])
    seen = {tuple(b["image"].shape) for b in chosen}
    for batch in batches[warmup:]:
        if tuple(batch["image"].shape) not in seen:
            seen.add(tuple(batch["image"].shape))
            chosen.append(batch)
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Measure every applicable variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: auto)")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from {','.join(ALL_VARIANTS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        parts = build_parts(args.config, args.overrides, Path(tmp), device=args.device)
        device = parts["device"]
        batches = preload(parts["loader"], args.warmup + args.steps)
        if device.type == "cuda":
            batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
        reference = copy.deepcopy(parts["model"])
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"{args.config.name} on {name} ({device}), torch {torch.__version__}, "
              f"batch {parts['config'].train.batch_size}, {args.steps} timed steps "
              f"after {args.warmup} warm-up")
        print(f"{'variant':<18} {'samples/s':>10} {'peak MiB':>9} {'vs fp32':>8}")
        base = None
        results: dict[str, float] = {}
        for variant in args.variants.split(","):
            settings = variant_settings(variant.strip(), device, parts["spatial_dims"])
            if settings is None:
                print(f"{variant:<18} {'n/a on this device or network':>30}")
                continue
            try:
                r = run_variant(parts, reference, batches, settings, args.warmup)
            except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
                print(f"{variant:<18} failed: {type(exc).__name__}: {exc}"[:400], flush=True)
                continue
            results[variant.strip()] = r["samples_per_s"]
            base = base or (r["samples_per_s"] if variant == "fp32" else None)
            ratio = f"{r['samples_per_s'] / base:.2f}x" if base else "-"
            print(f"{variant:<18} {r['samples_per_s']:>10.1f} {r['peak_mib']:>9.0f} {ratio:>8}",
                  flush=True)
        print(auto_choice_line(results, device))
    return 0


def auto_choice_line(results: dict[str, float], device: torch.device) -> str:
    """What ``train.amp: auto`` would choose from the measured ``results`` (samples/s by
    variant), by the run's own rule, and its share of the fastest variant's speed."""
    from medxfer.training.precision_probe import VARIANTS, fastest_variant

    if device.type == "cuda":
        chosen = fastest_variant({v: results[v] for v in VARIANTS if v in results})
        why = "fastest of fp32/bf16/fp16 above; fp16 only when 5% faster"
    else:
        chosen, why = "fp32", "no probe on the CPU"
    line = f"train.amp: auto would choose {chosen} ({why})"
    if results and chosen in results:
        fastest = max(results, key=results.__getitem__)
        line += (f": {results[chosen]:.1f} samples/s = "
                 f"{results[chosen] / results[fastest]:.2f}x of the fastest variant, {fastest}")
    return line


if __name__ == "__main__":
    sys.exit(main())
