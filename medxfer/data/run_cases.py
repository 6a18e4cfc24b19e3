"""The cases a run uses: its datalist, split as ``data.split`` says (or as the data stores
it), limited, and every case checked before training (:mod:`medxfer.data.checks`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medxfer.data.checks import check_before_training, notify_once, reading_notes
from medxfer.data.datalist import Datalist
from medxfer.data.layouts import build_datalist
from medxfer.data.sample import SAMPLE_TASKS, ensure_sample_data
from medxfer.data.splits import (
    apply_split_file,
    apply_stored_folds,
    assign_splits,
    check_splits,
    draw_missing_splits,
    limit_cases,
)
from medxfer.errors import DataError
from medxfer.tasks import task_of
from medxfer.training.distributed import is_main

if TYPE_CHECKING:
    from medxfer.config import RunConfig

__all__ = ["checked_cases", "load_datalist", "resolve_data_path", "split_datalist"]


def resolve_data_path(config: RunConfig) -> Path:
    """``data.path``, or the embedded sample data for the task when it is null.

    Raises:
        DataError: for regression without a path (there is no regression sample).
    """
    if config.data.path:
        return Path(config.data.path).expanduser()
    if config.task not in SAMPLE_TASKS:
        raise DataError(f"there is no embedded sample data for {config.task}; set data.path "
                        "(for regression, a manifest with numeric labels)")
    return ensure_sample_data(config.task)


def load_datalist(config: RunConfig) -> Datalist:
    """The datalist of ``config.data`` for ``config.task``.

    Raises:
        DataError: when the data cannot be read or has no labels for the task.
    """
    data = config.data
    dl = build_datalist(resolve_data_path(config), format=data.format, task=config.task,
                        classes=data.classes, image_key=data.image_key, label_key=data.label_key)
    if dl.task == "unlabelled":
        raise DataError(f"{dl.describe()} has no labels; a {config.task} run needs them "
                        "(a manifest with image and label columns, for example)")
    return dl


def split_datalist(dl: Datalist, config: RunConfig) -> list[dict[str, Any]]:
    """Cases with ``split`` assigned, limited and checked (see :mod:`medxfer.data.splits`).

    A stored split is used as given (``data.split.use_existing``): a datalist's ``fold``
    keys make fold ``data.split.fold`` (default 0) validation, and the splits a stored
    split lacks are drawn from its training cases.
    """
    sp, task = config.data.split, task_of(config)
    source_cases, folds = dl.cases, sp.folds
    stratify = sp.stratify and task.labels_are_classes
    if sp.file:
        source_cases = apply_split_file(dl.cases, sp.file)
    elif sp.use_existing and any(c.get("fold") is not None for c in dl.cases):
        source_cases, folds = apply_stored_folds(dl.cases, sp.fold or 0), None
    elif sp.fold is not None and sp.folds is None:
        raise DataError(f"data.split.fold {sp.fold} picks a fold, but {dl.describe()} stores "
                        "none (a MONAI datalist's fold keys): set data.split.folds to divide "
                        "its cases into folds, or remove data.split.fold")
    cases = assign_splits(source_cases, val_fraction=sp.val_fraction,
                          test_fraction=sp.test_fraction, seed=sp.seed, stratify=stratify,
                          group_by=sp.group_by, folds=folds, fold=sp.fold,
                          use_existing=sp.use_existing or bool(sp.file))
    if dl.missing_splits and sp.use_existing and not sp.file:
        cases = draw_missing_splits(cases, dl.missing_splits, val_fraction=sp.val_fraction,
                                    test_fraction=sp.test_fraction, seed=sp.seed,
                                    stratify=stratify, group_by=sp.group_by)
    cases = limit_cases(cases, config.data.limit, seed=sp.seed)
    check_splits(cases, task=config.task, class_names=dl.class_names, source=dl.describe())
    return cases


def checked_cases(dl: Datalist, config: RunConfig) -> list[dict[str, Any]]:
    """:func:`split_datalist`, then every case checked (:mod:`medxfer.data.checks`); what
    was read, excluded or assumed, and the checks' warnings, are shown once
    (:func:`medxfer.data.checks.notify_once`, on the main process only).

    Raises:
        DataError: for what the checks refuse, naming the files.
    """
    cases = split_datalist(dl, config)
    warnings = check_before_training(dl, cases, channels=config.data.preprocess.channels)
    if is_main():
        for line in reading_notes(dl) + warnings:
            notify_once(line)
    return cases
