"""Data cost against dataset size: epoch time per image and peak memory for 1k to 100k
2D images and 100 to 1000 3D volumes, for ``data.cache: auto``, ``disk`` and packed shards.

For each size it writes a synthetic dataset once (2D: 224x224 8-bit PNGs in a folder per
class; 3D: 96x96x96 int16 NIfTI volumes listed in a CSV manifest), then, in a fresh
process per (size, mode), builds the training data exactly as ``medxfer run`` does
(:func:`medxfer.data.load_data`, :func:`medxfer.training.loaders.make_loader`; no
augmentation, so that only the data path is timed) and reads every training batch for two
epochs. It prints, per row:

* ``prepare``: the time ``load_data`` takes per case: reading the case list and headers,
  splitting, checking, and filling the memory cache (``auto``);
* ``epoch 1`` and ``epoch 2`` per training image (epoch 1 fills a disk cache; epoch 2
  reads what was kept);
* ``total / image``: prepare + both epochs per case, the number the linear-cost target
  compares between sizes;
* peak RSS of the process and, for ``auto``, the memory budget and what the cache took.

Modes: ``auto`` (the default cache and budget: half the memory available), ``auto:1GB``
(``data.cache_memory: 1GB``, so that the largest sets do not fit and spill to disk), ``disk`` (every case on disk), ``packed`` (``medxfer data pack`` shards,
then ``auto`` on them; the time to pack is printed apart). The linear-cost target of the
scale issue: time per image at 100k within 1.2x of 10k; peak RSS bounded by the budget
plus a constant (printed as RSS - cache).

There is no plain-PyTorch baseline to compare against here: the ratios are between sizes
of medxfer's own pipeline, measured in the same run.

Usage::

    python benchmarks/dataset_scale.py [--sizes-2d 1000,10000,100000] [--sizes-3d 100,1000]
        [--modes auto,auto:1GB,disk,packed] [--root /tmp/medxfer_scale] [--workers 0]
        [--json rows.json] [--figure scale.png]
    python benchmarks/dataset_scale.py --plot rows.json --figure scale.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The split of every run (and of the packs, so that they hold the same cases).
SPLIT = {"val_fraction": 0.1, "test_fraction": 0.1}
SPLIT_SETS = [f"data.split.{k}={v}" for k, v in SPLIT.items()]


# -- synthetic data -------------------------------------------------------------------------

def make_2d(root: Path, n: int) -> Path:
    """``n`` 224x224 grey PNGs, two classes (a bright disc or a bright square on smooth
    noise; the case number in three pixels, so that no two are alike), in
    ``root/2d_<n>/<class>/``; written once."""
    import numpy as np
    from PIL import Image

    folder = root / f"2d_{n}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(n)
    yy, xx = np.mgrid[:224, :224]
    base = [(rng.random((28, 28)) * 120).astype(np.uint8) for _ in range(16)]
    for name in ("disc", "square"):
        (folder / name).mkdir(parents=True)
    for i in range(n):
        name = ("disc", "square")[i % 2]
        small = Image.fromarray(base[i % 16]).resize((224, 224), Image.BILINEAR)
        image = np.asarray(small).copy()
        cy, cx, r = rng.integers(50, 174, 2).tolist() + [int(rng.integers(15, 40))]
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if name == "disc" else \
            ((abs(yy - cy) < r) & (abs(xx - cx) < r))
        image[inside] = np.clip(image[inside].astype(int) + 100, 0, 255)
        image[0, :3] = [i >> 16, (i >> 8) & 255, i & 255]  # no two images alike
        Image.fromarray(image).save(folder / name / f"{i:06d}.png", compress_level=1)
    (folder / ".complete").write_text("")
    return folder


def make_3d(root: Path, n: int) -> Path:
    """``n`` 96^3 int16 NIfTI volumes (MR-like intensities; the case number in one voxel,
    so that no two are alike) and a manifest with a binary label, in ``root/3d_<n>/``;
    written once."""
    import nibabel as nib
    import numpy as np

    folder = root / f"3d_{n}"
    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(n)
    base = (rng.random((24, 24, 24)) * 400).astype(np.int16)
    rows = ["image,label"]
    for i in range(n):
        volume = np.kron(np.roll(base, i, axis=0), np.ones((4, 4, 4), np.int16))
        label = i % 2
        if label:
            c = rng.integers(30, 66, 3)
            volume[c[0] - 10:c[0] + 10, c[1] - 10:c[1] + 10, c[2] - 10:c[2] + 10] += 300
        volume[0, 0, 0] = i  # no two volumes alike
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folder / "images" / f"v{i:05d}.nii.gz"))
        rows.append(f"images/v{i:05d}.nii.gz,{label}")
    (folder / "cases.csv").write_text("\n".join(rows) + "\n")
    (folder / ".complete").write_text("")
    return folder


def pack(data: Path, root: Path) -> tuple[Path, float]:
    """``medxfer data pack`` of ``data`` into ``root/packed_<name>``; (folder, seconds)."""
    out = root / f"packed_{data.name}"
    if (out / "index.json").exists():
        return out, float("nan")
    shutil.rmtree(out, ignore_errors=True)
    tic = time.perf_counter()
    source = data / "cases.csv" if (data / "cases.csv").exists() else data
    done = subprocess.run([sys.executable, "-m", "medxfer", "data", "pack", str(source),
                           "--output", str(out), *(f"--set={s}" for s in SPLIT_SETS)],
                          cwd=REPO, env=_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"packing {source} failed:\n{done.stderr[-3000:]}")
    return out, time.perf_counter() - tic


# -- one measurement, in a process of its own --------------------------------------------

def measure(data: Path, mode: str, budget: str, cache_dir: Path, workers: int) -> dict:
    """Build the training data of ``data`` as ``medxfer run`` does and read two epochs."""
    import torch

    from medxfer.config import validate_config
    from medxfer.data import load_data
    from medxfer.training.loaders import make_loader

    rss_start = _peak_rss()
    fmt = "manifest" if (data / "cases.csv").exists() else "auto"
    path = data / "cases.csv" if fmt == "manifest" else data
    config = validate_config({
        "task": "classification",
        "data": {"path": str(path), "cache": "auto" if mode == "packed" else mode,
                 "cache_memory": None if budget == "default" else budget,
                 "num_workers": workers,
                 "augment": {"preset": "none"},
                 "split": dict(SPLIT)},
        "train": {"batch_size": 64, "threads": 1}})
    torch.set_num_threads(1)
    budgets: list = []
    import medxfer.data.loading as L

    L.report_cache = budgets.append  # the run's budget, to print what the cache took
    tic = time.perf_counter()
    bundle = load_data(config, imagenet_norm=False, cache_dir=cache_dir)
    prepare = time.perf_counter() - tic
    loader = make_loader(bundle.train, config, train=True, labels=bundle.train_labels)
    epochs = []
    for _ in range(2):
        tic, seen = time.perf_counter(), 0
        for batch in loader:
            seen += int(batch["image"].shape[0])
        epochs.append((time.perf_counter() - tic, seen))
    cases = len(bundle.cases)
    used = budgets[-1] if budgets else None
    return {"cases": cases, "train": len(bundle.train), "prepare_s": prepare,
            "epoch1_s": epochs[0][0], "epoch2_s": epochs[1][0], "seen": epochs[1][1],
            "peak_rss": _peak_rss(), "rss_after_imports": rss_start,
            "budget": used.total if used else None, "cache_used": used.used if used else 0,
            "cache_lines": used.lines if used else []}


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _run_child(data: Path, mode: str, budget: str, scratch: Path, workers: int) -> dict:
    cache_dir = scratch / f"cache_{data.name}_{mode}"
    shutil.rmtree(cache_dir, ignore_errors=True)
    done = subprocess.run([sys.executable, __file__, "--child", str(data), mode, budget,
                           str(cache_dir), str(workers)], capture_output=True, text=True,
                          env=_env(), cwd=REPO, check=False)
    shutil.rmtree(cache_dir, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"{data.name} {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-2d", default="1000,10000,100000")
    parser.add_argument("--sizes-3d", default="100,1000")
    parser.add_argument("--modes", default="auto,auto:1GB,disk,packed",
                        help="auto (the default budget), auto:SIZE (data.cache_memory SIZE), "
                             "disk, packed (auto on medxfer data pack shards)")
    parser.add_argument("--root", default="/tmp/medxfer_scale", type=Path)
    parser.add_argument("--workers", type=int, default=0, help="data.num_workers")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--figure", type=Path, help="also plot time per image and peak RSS "
                        "against the number of cases (PNG)")
    parser.add_argument("--plot", type=Path, metavar="JSON",
                        help="only plot the rows of an earlier --json into --figure")
    args = parser.parse_args()
    if args.plot:
        plot(json.loads(args.plot.read_text()), args.figure or args.plot.with_suffix(".png"))
        return
    args.root.mkdir(parents=True, exist_ok=True)
    sets = [("2D", int(n)) for n in args.sizes_2d.split(",") if n] + \
        [("3D", int(n)) for n in args.sizes_3d.split(",") if n]
    print(f"data.num_workers {args.workers}, batch 64, no "
          "augmentation, 1 torch thread; per image: prepare + 2 epochs over the cases")
    print(f"{'set':>10} {'mode':>7} {'prepare/img':>12} {'epoch1/img':>11} {'epoch2/img':>11} "
          f"{'total/img':>10} {'peak RSS':>9} {'cache':>9} {'RSS-cache':>10}")
    rows = []
    for kind, n in sets:
        tic = time.perf_counter()
        data = make_2d(args.root, n) if kind == "2D" else make_3d(args.root, n)
        made = time.perf_counter() - tic
        for mode in args.modes.split(","):
            source, packing = data, None
            if mode == "packed":
                source, packing = pack(data, args.root)
            cache, _, budget = mode.partition(":")
            row = _run_child(source, cache, budget or "default", args.root, args.workers)
            total = (row["prepare_s"] + row["epoch1_s"] + row["epoch2_s"]) / row["cases"]
            row.update(set=f"{kind} {n}", mode=mode, total_per_image_s=total,
                       make_s=made, pack_s=packing)
            rows.append(row)
            if args.json:  # after every row, so that a later failure keeps what was measured
                args.json.write_text(json.dumps(rows, indent=1))
            per = 1000 / row["cases"]
            print(f"{kind + ' ' + str(n):>10} {mode:>7} {row['prepare_s'] * per:>10.2f}ms "
                  f"{row['epoch1_s'] * 1000 / row['seen']:>9.2f}ms "
                  f"{row['epoch2_s'] * 1000 / row['seen']:>9.2f}ms {total * 1000:>8.2f}ms "
                  f"{_gb(row['peak_rss']):>9} {_gb(row['cache_used']):>9} "
                  f"{_gb(row['peak_rss'] - row['cache_used']):>10}", flush=True)
            if packing is not None and not math.isnan(packing):
                print(f"{'':>10} {'':>7} (packing took {packing / row['cases'] * 1000:.2f} ms "
                      "per image, once)")
            for line in row["cache_lines"]:
                print(f"{'':>19} {line}")
    print("\nratios of total time per image, larger set / 10x smaller set:")
    for mode in args.modes.split(","):
        for kind in ("2D", "3D"):
            mine = sorted((int(r["set"].split()[1]), r["total_per_image_s"]) for r in rows
                          if r["mode"] == mode and r["set"].startswith(kind))
            for (small, a), (large, b) in itertools.pairwise(mine):
                print(f"  {mode:>7} {kind} {large} / {small}: {b / a:.2f}x")
    if args.figure:
        plot(rows, args.figure)


def plot(rows: list[dict], path: Path) -> None:
    """Time per image (left) and peak RSS (right) against cases, a line per set and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind in ("2D", "3D"):
        for mode in dict.fromkeys(r["mode"] for r in rows):
            mine = sorted((r["cases"], r) for r in rows
                          if r["mode"] == mode and r["set"].startswith(kind))
            if not mine:
                continue
            n = [c for c, _ in mine]
            label = f"{kind} {mode}"
            style = "-o" if kind == "2D" else "--s"
            left.plot(n, [r["total_per_image_s"] * 1000 for _, r in mine], style, label=label)
            right.plot(n, [r["peak_rss"] / 1e9 for _, r in mine], style, label=label)
    for axis, title in ((left, "prepare + 2 epochs, ms per case"), (right, "peak RSS, GB")):
        axis.set_xscale("log")
        axis.set_xlabel("cases")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    left.set_yscale("log")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"figure: {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        data, mode, budget, cache_dir, workers = sys.argv[2:7]
        print(json.dumps(measure(Path(data), mode, budget, Path(cache_dir), int(workers))))
    else:
        main()
