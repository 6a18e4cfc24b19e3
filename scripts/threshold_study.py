"""Compare decision-threshold rules for binary classification on validation alone.

For each finished run (a deep-ensemble run counts as one model), the run's validation
probabilities are recomputed, and each rule is scored by repeated stratified two-fold
splits of the validation set: the threshold is chosen on one half and accuracy and
balanced accuracy are measured on the other. No test case is read unless ``--test`` is
given (then each rule's threshold, chosen on the whole validation set, is also applied to
the test split: use it to confirm a rule chosen beforehand, not to choose one).

Usage::

    python scripts/threshold_study.py RUN [RUN ...] [--repeats 200] [--test] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

RULES = ("val_accuracy", "val_accuracy_1se", "val_accuracy_1se_balanced", "val_youden",
         "fixed_0.5")


def threshold_for(rule: str, y: np.ndarray, p: np.ndarray) -> float:
    """The threshold ``rule`` chooses on labels ``y`` and positive-class scores ``p``."""
    from medxfer import metrics as M

    if rule == "fixed_0.5":
        return 0.5
    if rule not in M.THRESHOLD_METHODS:  # a variant under study, not (yet) in medxfer
        return _accuracy_1se_balanced(y, p)
    return M.choose_threshold(y, p, rule)


def _accuracy_1se_balanced(y: np.ndarray, p: np.ndarray) -> float:
    """Of the thresholds within one standard error of the best accuracy, the one with the
    best balanced accuracy (ties: nearest 0.5)."""
    from medxfer import metrics as M

    candidates = np.unique(np.concatenate([p, [0.5]]))
    accuracy = np.array([np.mean((p >= t) == (y == 1)) for t in candidates])
    best = accuracy.max()
    keep = candidates[accuracy >= best - M.accuracy_standard_error(float(best), y.size) - 1e-12]
    balanced = np.array([scores(y, p, t)[1] for t in keep])
    top = keep[balanced >= balanced.max() - 1e-12]
    return float(top[np.argmin(np.abs(top - 0.5))])


def scores(y: np.ndarray, p: np.ndarray, t: float) -> tuple[float, float]:
    """Accuracy and balanced accuracy of ``p >= t``."""
    pred = p >= t
    acc = float(np.mean(pred == (y == 1)))
    sens = float(np.mean(pred[y == 1])) if np.any(y == 1) else float("nan")
    spec = float(np.mean(~pred[y == 0])) if np.any(y == 0) else float("nan")
    return acc, (sens + spec) / 2


def split_half(y: np.ndarray, p: np.ndarray, repeats: int, seed: int) -> dict[str, dict]:
    """Each rule's mean held-out accuracy / balanced accuracy over ``repeats`` stratified
    two-fold splits of one validation set, and the spread of its thresholds."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, list[float]]] = {r: {"acc": [], "bacc": [], "t": []} for r in RULES}
    for _ in range(repeats):
        half = np.zeros(y.size, dtype=bool)
        for cls in (0, 1):
            idx = np.flatnonzero(y == cls)
            half[rng.permutation(idx)[: idx.size // 2]] = True
        for a, b in ((half, ~half), (~half, half)):
            for rule in RULES:
                t = threshold_for(rule, y[a], p[a])
                acc, bacc = scores(y[b], p[b], t)
                out[rule]["acc"].append(acc)
                out[rule]["bacc"].append(bacc)
                out[rule]["t"].append(t)
    return {r: {"acc": float(np.mean(v["acc"])), "bacc": float(np.mean(v["bacc"])),
                "t_sd": float(np.std(v["t"]))} for r, v in out.items()}


def run_predictions(run_dir: Path, with_test: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Validation (and test) labels and positive-class probabilities of a finished run."""
    import torch

    from medxfer.tasks import task_of
    from medxfer.training.evaluate import predict
    from medxfer.training.loaders import make_loader
    from medxfer.workflows.ensemble import Member, load_member_data, read_splits
    from medxfer.workflows.predict import load_run

    device = torch.device("cpu")
    member = Member(run_dir.name, load_run(run_dir, device=device), read_splits(run_dir))
    load_member_data([member], device)
    task = task_of(member.config)
    out = {}
    for split in ("val", "test") if with_test else ("val",):
        loader = make_loader(member.datasets[split], member.config, train=False, device=device)
        preds = predict(member.loaded.model, loader, device, member.precision, task)
        out[split] = (preds.targets.astype(int), preds.scores[:, 1].astype(np.float64))
    return out


def main(argv: list[str] | None = None) -> int:
    """Score every rule on each run's validation set and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test", action="store_true",
                        help="also apply each rule's whole-validation threshold to test")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    print(f"{'run':<22} {'rule':<18} {'held-out val ACC':>16} {'bal. ACC':>9} "
          f"{'thr. sd':>8} {'thr.':>6}" + ("  test ACC  bal. ACC" if args.test else ""))
    for run in args.runs:
        data = run_predictions(run, args.test)
        y, p = data["val"]
        study = split_half(y, p, args.repeats, args.seed)
        for rule in RULES:
            t = threshold_for(rule, y, p)
            row = {"run": str(run), "rule": rule, "val_n": int(y.size),
                   "val_positive_share": float(y.mean()), "threshold": t, **study[rule]}
            line = (f"{run.name:<22} {rule:<18} {row['acc']:>16.4f} {row['bacc']:>9.4f} "
                    f"{row['t_sd']:>8.3f} {t:>6.3f}")
            if args.test:
                row["test_acc"], row["test_bacc"] = scores(*data["test"], t)
                line += f"  {row['test_acc']:>8.4f}  {row['test_bacc']:>8.4f}"
            rows.append(row)
            print(line, flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
