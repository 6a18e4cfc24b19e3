"""The checks before training: their time per case against reading the data once.

For each dataset, the cases are split as a run splits them (``data.split`` defaults), then,
alternately and several times each:

* **check**: :func:`medxfer.data.checks.check_before_training` on every case, as ``medxfer
  run --check`` and the start of a run make it: each image's header (not its voxels), a
  content hash of each image file, and each mask read whole (its values, foreground and
  grid);
* **read**: every case read once as a run's cache fill reads it
  (:func:`medxfer.data.readers.read_case` of the image, and of the mask), without the
  preprocessing that follows.

The printed ratio ``check / read`` (median over the repeats) is what the checks cost on
top of one pass over the data; files are read once before timing, so both come from the
page cache. A MedMNIST file is read by loading it (its arrays); the check hashes the
arrays.

Usage::

    python benchmarks/data_check.py [PATH ...] [--repeats 5]

With no PATH, the embedded sample datasets and the shared Hippocampus and BreastMNIST sets
(``../shared/data`` or ``$MEDXFER_SHARED_DATA``, where present) are measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from _common import REPO

SHARED = Path(os.environ.get("MEDXFER_SHARED_DATA") or REPO.parent / "shared" / "data")
DEFAULTS = [REPO / "sample_data" / "classification", REPO / "sample_data" / "segmentation_2d",
            REPO / "sample_data" / "segmentation_3d", SHARED / "msd_hippocampus",
            SHARED / "medmnist" / "breastmnist.npz"]


def split_cases(path: Path) -> tuple[Any, list[dict[str, Any]]]:
    """The datalist of ``path`` and its cases split as a run with default settings splits
    them."""
    from medxfer.config import RunConfig
    from medxfer.data.layouts import build_datalist
    from medxfer.data.run_cases import split_datalist

    dl = build_datalist(path)
    config = RunConfig.model_validate({"task": dl.task, "data": {"path": str(path)}})
    return dl, split_datalist(dl, config)


def time_check(dl: Any, cases: list[dict[str, Any]]) -> float:
    """Seconds for the checks before training on ``cases``."""
    from medxfer.data.checks import check_before_training

    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_before_training(dl, cases)
    return time.perf_counter() - tic


def time_read(dl: Any, cases: list[dict[str, Any]]) -> float:
    """Seconds to read every case's image (and mask) once."""
    from medxfer.data.cases import read_case

    masks = dl.label_kind == "mask"
    tic = time.perf_counter()
    if dl.medmnist is not None:  # one file: reading the data is loading it
        from medxfer.data.medmnist import load_medmnist

        load_medmnist(dl.path)
        return time.perf_counter() - tic
    for case in cases:
        read_case(case, "image")
        if masks:
            read_case(case, "label")
    return time.perf_counter() - tic


def measure(path: Path, repeats: int) -> dict[str, Any]:
    """Median check and read times of one dataset, per case."""
    dl, cases = split_cases(path)
    time_check(dl, cases)  # warm the page cache (and the imports)
    time_read(dl, cases)
    check, read = [], []
    for _ in range(repeats):
        check.append(time_check(dl, cases))
        read.append(time_read(dl, cases))
    n = len(cases)
    ratios = [c / r for c, r in zip(check, read)]
    return {"dataset": path.name, "layout": dl.format, "task": dl.task, "cases": n,
            "check_ms": 1000 * statistics.median(check) / n,
            "read_ms": 1000 * statistics.median(read) / n, "ratio": statistics.median(ratios)}


def main(argv: list[str] | None = None) -> int:
    """Measure each dataset and print a table of ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--repeats", type=int, default=5, help="timed passes of each")
    args = parser.parse_args(argv)
    paths = list(args.paths)
    if not paths:
        for path in DEFAULTS:
            if path.exists():
                paths.append(path)
            else:
                print(f"skip {path}: not present")
    print(f"{args.repeats} alternating passes each, median; files in the page cache")
    print(f"{'dataset':<26} {'layout':<10} {'task':<14} {'cases':>6} {'check ms/case':>13} "
          f"{'read ms/case':>12} {'ratio':>6}")
    worst = 0.0
    for path in paths:
        r = measure(path, args.repeats)
        worst = max(worst, r["ratio"])
        print(f"{r['dataset']:<26} {r['layout']:<10} {r['task']:<14} {r['cases']:>6} "
              f"{r['check_ms']:>13.3f} {r['read_ms']:>12.3f} {r['ratio']:>6.2f}", flush=True)
    print(f"worst ratio check/read: {worst:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
