"""Train/validation/test splits: stratified, grouped by patient, seeded; k-fold.

A group (by default the ``patient_id`` of a case, or the case id when it has none) never
appears in two splits. Classification splits are stratified on each group's majority label.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from medxfer.errors import DataError
from medxfer.tasks import label_kind

SPLITS = ("train", "val", "test")


def group_of(case: dict[str, Any], group_by: str | None) -> str:
    """The group key of a case: its ``group_by`` value, or its id when that is empty."""
    value = case.get(group_by) if group_by else None
    return str(value) if value not in (None, "") else f"case:{case['id']}"


def _strata(cases: list[dict[str, Any]], groups: dict[str, list[int]],
            stratify: bool) -> dict[Any, list[str]]:
    strata: dict[Any, list[str]] = defaultdict(list)
    for gid in sorted(groups):
        labels = [cases[i].get("label") for i in groups[gid]]
        key = Counter(labels).most_common(1)[0][0] if stratify else 0
        strata[key if isinstance(key, (int, np.integer)) and stratify else 0].append(gid)
    return dict(sorted(strata.items()))


def split_fractions(cases: list[dict[str, Any]], *, val_fraction: float, test_fraction: float,
                    seed: int = 0, stratify: bool = True,
                    group_by: str | None = "patient_id") -> list[str]:
    """Assign each case to train, val or test by fraction of cases, keeping groups whole.

    Args:
        cases: Cases with ``id``, ``label`` and the ``group_by`` key.
        val_fraction: Share of cases for validation.
        test_fraction: Share of cases for test.
        seed: Seed of the shuffle.
        stratify: Keep class proportions (integer labels only) in each split.
        group_by: Case key whose values never cross splits (None: each case alone).

    Returns:
        The split name of each case, in order.
    """
    groups = _case_groups(cases, group_by)
    rng = np.random.default_rng(seed)
    out = ["train"] * len(cases)
    for gids in _strata(cases, groups, stratify).values():
        order = [gids[j] for j in rng.permutation(len(gids))]
        n = sum(len(groups[g]) for g in order)
        targets = [("test", round(n * test_fraction)), ("val", round(n * val_fraction))]
        taken = 0
        for split, target in targets:
            filled = 0
            while order and filled < target and taken < len(order):
                gid = order[taken]
                size = len(groups[gid])
                if filled and filled + size - target > target - filled:
                    break  # this group would overshoot more than it helps
                for i in groups[gid]:
                    out[i] = split
                filled += size
                taken += 1
    return out


def _case_groups(cases: list[dict[str, Any]], group_by: str | None) -> dict[str, list[int]]:
    """Case indices by group (patient), in case order."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, case in enumerate(cases):
        groups[group_of(case, group_by)].append(i)
    return groups


def split_kfold(cases: list[dict[str, Any]], *, folds: int, seed: int = 0, stratify: bool = True,
                group_by: str | None = "patient_id") -> list[int]:
    """Assign each case to one of ``folds`` folds, keeping groups whole and strata balanced.

    Returns:
        The fold index of each case, in order.
    """
    groups = _case_groups(cases, group_by)
    rng = np.random.default_rng(seed)
    fold_of = [0] * len(cases)
    sizes = [0] * folds
    for gids in _strata(cases, groups, stratify).values():
        order = [gids[j] for j in rng.permutation(len(gids))]
        order.sort(key=lambda g: -len(groups[g]))  # stable: big groups first, then shuffled
        stratum_sizes = [0] * folds
        for gid in order:
            k = min(range(folds), key=lambda f: (stratum_sizes[f], sizes[f], f))
            for i in groups[gid]:
                fold_of[i] = k
            stratum_sizes[k] += len(groups[gid])
            sizes[k] += len(groups[gid])
    return fold_of


def assign_splits(cases: list[dict[str, Any]], *, val_fraction: float = 0.15,
                  test_fraction: float = 0.15, seed: int = 0, stratify: bool = True,
                  group_by: str | None = "patient_id", folds: int | None = None,
                  fold: int | None = None, use_existing: bool = True) -> list[dict[str, Any]]:
    """Set ``case["split"]`` on copies of ``cases``.

    A stored split (every case has one) is kept when ``use_existing``; with ``folds``, its
    train and val cases are pooled and re-divided into folds (test is kept). Without a
    stored split, test is held out by ``test_fraction`` and the rest is divided by
    ``val_fraction`` (or into ``folds`` folds, fold ``fold`` being validation).

    Returns:
        New case dicts with ``split`` set.

    Raises:
        DataError: when only some cases have a stored split, or a group crosses splits.
    """
    cases = [dict(c) for c in cases]
    stored = [c.get("split") for c in cases]
    n_stored = sum(s is not None for s in stored)
    if 0 < n_stored < len(cases) and use_existing:
        missing = [c["id"] for c in cases if c.get("split") is None][:3]
        raise DataError(f"{len(cases) - n_stored} cases have no split (e.g. {', '.join(missing)}) "
                        "while others do; fill the split column for every case or remove it")
    if use_existing and n_stored == len(cases):
        check_no_group_leak(cases, group_by)
        if folds:
            pool = [c for c in cases if c["split"] != "test"]
            for c, k in zip(pool, split_kfold(pool, folds=folds, seed=seed, stratify=stratify,
                                              group_by=group_by)):
                c["split"] = "val" if k == (fold or 0) else "train"
        return cases
    if folds:
        first = split_fractions(cases, val_fraction=0.0, test_fraction=test_fraction, seed=seed,
                                stratify=stratify, group_by=group_by)
        pool = [c for c, s in zip(cases, first) if s != "test"]
        for c, s in zip(cases, first):
            c["split"] = s
        for c, k in zip(pool, split_kfold(pool, folds=folds, seed=seed, stratify=stratify,
                                          group_by=group_by)):
            c["split"] = "val" if k == (fold or 0) else "train"
        return cases
    names = split_fractions(cases, val_fraction=val_fraction, test_fraction=test_fraction,
                            seed=seed, stratify=stratify, group_by=group_by)
    for c, s in zip(cases, names):
        c["split"] = s
    return cases


def apply_stored_folds(cases: list[dict[str, Any]], fold: int) -> list[dict[str, Any]]:
    """Copies of ``cases`` whose training cases with ``fold`` equal to ``fold`` are
    validation (a MONAI datalist's ``fold`` keys).

    Raises:
        DataError: when no case has that fold.
    """
    folds = sorted({c["fold"] for c in cases if c.get("fold") is not None})
    if fold not in folds:
        raise DataError(f"data.split.fold {fold} is not one of the datalist's folds {folds}")
    return [{**c, "split": "val"} if c.get("fold") == fold and c.get("split") == "train"
            else dict(c) for c in cases]


def draw_missing_splits(cases: list[dict[str, Any]], missing: tuple[str, ...], *,
                        val_fraction: float, test_fraction: float, seed: int = 0,
                        stratify: bool = True,
                        group_by: str | None = "patient_id") -> list[dict[str, Any]]:
    """A stored split that lacks validation or test cases (``missing``): those are drawn
    from its training cases by the fractions (of the training cases), grouped and
    stratified like :func:`split_fractions`.

    Raises:
        DataError: when a group then crosses splits.
    """
    cases = [dict(c) for c in cases]
    pool = [i for i, c in enumerate(cases) if c["split"] == "train"]
    names = split_fractions([cases[i] for i in pool],
                            val_fraction=val_fraction if "val" in missing else 0.0,
                            test_fraction=test_fraction if "test" in missing else 0.0,
                            seed=seed, stratify=stratify, group_by=group_by)
    for i, name in zip(pool, names):
        cases[i]["split"] = name
    check_no_group_leak(cases, group_by)
    return cases


def check_no_group_leak(cases: list[dict[str, Any]], group_by: str | None) -> None:
    """Raise :class:`DataError` when a ``group_by`` value appears in two splits."""
    if not group_by:
        return
    seen: dict[str, str] = {}
    for case in cases:
        value = case.get(group_by)
        if value in (None, ""):
            continue
        first = seen.setdefault(str(value), case["split"])
        if first != case["split"]:
            raise DataError(f"{group_by} {value!r} appears in both the {first!r} and "
                            f"{case['split']!r} splits (case {case['id']!r}); a patient must stay "
                            "in one split: fix the split column or set data.split.use_existing: false")


def check_splits(cases: list[dict[str, Any]], *, task: str, class_names: list[str],
                 source: str) -> None:
    """Refuse an empty split or (classification) a class absent from the training split.

    Raises:
        DataError: naming the split or class and what to change.
    """
    counts = Counter(c["split"] for c in cases)
    for split in SPLITS:
        if counts.get(split, 0) == 0:
            raise DataError(f"{source}: the {split!r} split is empty ({len(cases)} cases: "
                            f"{dict(counts)}); add data or raise data.split.val_fraction / "
                            "test_fraction")
    if label_kind(task) == "class":
        present = {c["label"] for c in cases if c["split"] == "train"}
        for index, name in enumerate(class_names):
            if index not in present and any(c["label"] == index for c in cases):
                raise DataError(f"{source}: class {name!r} has no case in the training split; "
                                "change data.split.seed or fractions, or add cases of that class")


def limit_cases(cases: list[dict[str, Any]], limit: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """Keep at most ``limit`` cases per split: a seeded sample, class-proportional, in order."""
    if limit is None:
        return cases
    keep: set[int] = set()
    rng = np.random.default_rng(seed)
    for split in SPLITS:
        idx = [i for i, c in enumerate(cases) if c["split"] == split]
        if len(idx) <= limit:
            keep.update(idx)
            continue
        by_label: dict[Any, list[int]] = defaultdict(list)
        for i in idx:
            label = cases[i].get("label")
            by_label[label if isinstance(label, (int, np.integer)) else 0].append(i)
        keyed = []
        for members in by_label.values():
            order = [members[j] for j in rng.permutation(len(members))]
            keyed += [((j + 0.5) / len(order), i) for j, i in enumerate(order)]
        keep.update(i for _, i in sorted(keyed)[:limit])
    return [c for i, c in enumerate(cases) if i in keep]


def read_split_file(path: str) -> dict[str, str]:
    """Case id -> split from a CSV with ``id`` and ``split`` columns or a JSON object
    ``{"train": [ids], "val": [ids], "test": [ids]}``.

    Raises:
        DataError: for a missing or malformed file, an unknown split name or an id listed
            twice.
    """
    import csv
    import json
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise DataError(f"data.split.file {str(file)!r} does not exist")
    out: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(file.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("expected an object {split: [ids]}")
            pairs = [(str(i), str(s)) for s, ids in data.items() for i in ids]
        else:
            with file.open(newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            if rows and not {"id", "split"} <= set(rows[0]):
                raise ValueError("expected the columns id and split")
            pairs = [(r["id"].strip(), r["split"].strip()) for r in rows]
    except (ValueError, TypeError, OSError) as exc:
        raise DataError(f"data.split.file {str(file)!r} cannot be read: {exc}") from None
    for case_id, split in pairs:
        if split not in SPLITS:
            raise DataError(f"data.split.file {str(file)!r}: case {case_id!r} has split "
                            f"{split!r}; use one of {', '.join(SPLITS)}")
        if case_id in out:
            raise DataError(f"data.split.file {str(file)!r}: case {case_id!r} is listed twice")
        out[case_id] = split
    return out


def apply_split_file(cases: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """Copies of ``cases`` with ``split`` set from :func:`read_split_file`.

    Raises:
        DataError: when a case is missing from the file or the file names unknown cases.
    """
    mapping = read_split_file(path)
    ids = {str(c["id"]) for c in cases}
    missing = [str(c["id"]) for c in cases if str(c["id"]) not in mapping]
    unknown = [i for i in mapping if i not in ids]
    if missing or unknown:
        detail = []
        if missing:
            detail.append(f"{len(missing)} case(s) not in the file, e.g. {', '.join(missing[:3])}")
        if unknown:
            detail.append(f"{len(unknown)} id(s) not in the data, e.g. {', '.join(unknown[:3])}")
        raise DataError(f"data.split.file {path!r} does not match the dataset: "
                        f"{'; '.join(detail)}")
    return [{**c, "split": mapping[str(c["id"])]} for c in cases]
