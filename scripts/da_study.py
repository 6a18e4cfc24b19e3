"""Domain-adaptation study: source only, each method, and the target-supervised upper
bound, for several seeds; writes a table with the share of the gap each method closes.

Usage (from the repository root)::

    .venv/bin/python scripts/da_study.py configs/pneumoniamnist_da.yaml \\
        --shift-recipe configs/shifts/scanner_b.yaml --seeds 0 1 2 --output runs/da/study

Runs one training at a time, in this process. A condition/seed whose run folder already
holds ``metrics.json`` is reused, so an interrupted study continues where it stopped.
Writes ``study.md``, ``study.json`` and ``features_pca.png`` (source vs target test
features of source only and of every method, seed 0) into ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

METHODS = ["adabn", "dsbn", "coral", "mmd", "dann"]


def _run(config_path: Path, overrides: list[str], run_dir: Path) -> dict:
    from medxfer.config import load_config
    from medxfer.workflows.run import run_pipeline

    done = run_dir / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists without metrics.json (an interrupted run); "
                         "delete it to run it again")
    config = load_config(config_path, overrides)
    tic = time.perf_counter()
    summary = run_pipeline(config, run_dir, progress=False)
    print(f"  {run_dir.name}: {time.perf_counter() - tic:.0f} s, target "
          f"acc {summary['target_test'].get('accuracy', float('nan')):.3f}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    """Run the study and write its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="run config with data.target set")
    parser.add_argument("--output", type=Path, default=Path("runs/da/study"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS,
                        help="domain_adaptation plugins to run (besides the two baselines)")
    parser.add_argument("--shift-recipe", type=Path, default=None,
                        help="make data.target from data.path with this recipe when missing")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="KEY=VALUE for every run (e.g. train.epochs=3)")
    parser.add_argument("--variant", nargs="+", action="append", default=[],
                        metavar="NAME KEY=VALUE",
                        help="an extra condition: its name, then its overrides (e.g. "
                             "coral_w100 domain_adaptation.name=coral domain_adaptation.weight=100)")
    parser.add_argument("--no-supervised", action="store_true",
                        help="skip the target-supervised upper bound")
    args = parser.parse_args(argv)

    from medxfer.config import load_config
    from medxfer.report.domain_table import SOURCE_ONLY, SUPERVISED, study_markdown, study_rows

    base = load_config(args.config, args.overrides)
    if base.data.target is None:
        raise SystemExit(f"{args.config}: data.target is not set")
    target_path = Path(base.data.target.path)
    if not target_path.exists():
        if args.shift_recipe is None:
            raise SystemExit(f"{target_path} does not exist; pass --shift-recipe to make it")
        from medxfer.data.shift import load_recipe, shift_medmnist

        steps, seed = load_recipe(args.shift_recipe, [])
        shift_medmnist(base.data.path, target_path, steps, seed=seed)
        print(f"made the target {target_path}", flush=True)

    conditions = {SOURCE_ONLY: ["domain_adaptation=null"]}
    for method in args.methods:
        conditions[method] = [f"domain_adaptation.name={method}"]
    for name, *extra in args.variant:
        conditions[name] = extra
    if not args.no_supervised:  # train on the labelled target itself: the upper bound
        conditions[SUPERVISED] = ["domain_adaptation=null", f"data.path={target_path}"]
    results: dict[str, list[dict]] = {}
    for name, extra in conditions.items():
        for seed in args.seeds:
            run_dir = args.output / f"{name}_s{seed}"
            overrides = args.overrides + extra + [f"train.seed={seed}"]
            results.setdefault(name, []).append(_run(args.config, overrides, run_dir))

    rows = study_rows(results)
    table = study_markdown(rows)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "study.md").write_text(table, encoding="utf-8")
    (args.output / "study.json").write_text(json.dumps(rows, indent=2))
    _figure(args.output, [c for c in conditions if c != SUPERVISED], args.seeds[0])
    print(table)


def _figure(output: Path, conditions: list[str], seed: int) -> None:
    import numpy as np

    from medxfer.report.domain_figures import plot_feature_pca

    panels = {}
    for name in conditions:
        path = output / f"{name}_s{seed}" / "features.npz"
        if path.is_file():
            with np.load(path) as data:
                panels[name] = (data["source"], data["target"])
    if panels:
        plot_feature_pca(panels, output / "features_pca.png")


if __name__ == "__main__":
    sys.exit(main())
