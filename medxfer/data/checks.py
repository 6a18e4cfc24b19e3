"""Checks of every case before training (``medxfer run --check`` and the start of a run).

One pass of :func:`medxfer.data.scan.scan_cases` (headers, hashes, masks), then:

* every case readable, every mask's values within the classes and its grid the image's;
* one dimensionality and one channel count (grey and colour agree under
  ``data.preprocess.channels: rgb`` or ``grey``);
* no file (by content) in two splits;
* at least two classes in the training split and in each evaluated split (validation and
  test); for masks, foreground in each split, and empty masks counted;
* classes with very few validation cases are warned about.

Refusals raise :class:`~medxfer.errors.DataError` naming the files; warnings are given back
for the caller to show (:func:`notify_once`).
"""

from __future__ import annotations

import numbers
from collections import Counter, defaultdict
from typing import Any

from medxfer.data.scan import CaseScan, name_found_classes, scan_cases
from medxfer.data.steps import ExpectedImages
from medxfer.data.transforms import AdaptChannels
from medxfer.errors import DataError, notify

#: Fewer validation cases than this for a class is warned about.
FEW_VALIDATION_CASES = 10
_SPLITS = ("train", "val", "test")
_NOTIFIED: set[str] = set()


def check_before_training(dl: Any, cases: list[dict[str, Any]], *, channels: str = "auto",
                          num_classes: int | None = None) -> list[str]:
    """Check the split ``cases`` of ``dl`` (see the module docstring).

    Args:
        dl: The :class:`~medxfer.data.datalist.Datalist`.
        cases: Its cases with ``split`` assigned (as a run uses them).
        channels: ``data.preprocess.channels``.
        num_classes: Mask classes including background (default: the datalist's; when
            nobody declared them, the mask values found name them, and ``dl.class_names``
            is set to those).

    Returns:
        Warnings (one line each).

    Raises:
        DataError: naming the file(s) and what to do, for what a run cannot use.
    """
    scans = scan_cases(dl, cases, num_classes=num_classes)
    refuse_problems(scans)
    name_found_classes(dl, scans)
    refuse_mixed_images(scans, channels)
    warnings = []
    kind = dl.label_kind
    if kind == "class":
        warnings += _class_counts(dl, scans)
    elif kind == "mask":
        warnings += _mask_counts(dl, scans)
    elif kind == "value":
        values = {s.label for s in scans if s.split == "train"}
        if len(values) < 2:
            raise DataError(f"{dl.describe()}: every training case has the target "
                            f"{next(iter(values), None)!r}; a regression needs targets that "
                            "differ: check data.label_key")
    return duplicate_files(scans, official=dl.medmnist is not None,
                           class_names=dl.class_names) + warnings


def refuse_problems(scans: list[CaseScan]) -> None:
    """Raise the first case's problem, saying how many cases have one."""
    bad = [s for s in scans if s.problem]
    if bad:
        more = f" (and {len(bad) - 1} more cases with a problem; `medxfer data inspect` " \
               "lists them)" if len(bad) > 1 else ""
        raise DataError(bad[0].problem + more)


def refuse_mixed_images(scans: list[CaseScan], channels: str = "auto") -> None:
    """Refuse an image of another dimensionality, or of channels that
    ``data.preprocess.channels`` does not make agree, than the first training case's (it
    sets the network's input), as a run's reading of each case would.

    Raises:
        DataError: naming the file that differs and the first training case's.
    """
    readable = [s for s in scans if s.spatial_dims]
    first = next((s for s in readable if s.split == "train"), readable[0] if readable else None)
    adapt = AdaptChannels(channels)
    if first is None or len({(s.spatial_dims, adapt.out_channels(s.channels))
                             for s in readable}) == 1:
        return
    hint = "" if channels == "grey" else \
        ", or set data.preprocess.channels: grey to average each image's channels to one"
    expect = ExpectedImages(spatial_dims=first.spatial_dims, channels=first.channels,
                            source=first.image, adapt=channels, hint=hint)
    for scan in readable:
        expect.check_counts(scan.spatial_dims, scan.channels, {"image": scan.image, "id": scan.id})


def duplicate_files(scans: list[CaseScan], *, official: bool = False,
                    class_names: list[str] | None = None) -> list[str]:
    """Refuse a file (by content) in two splits; warn of copies within one split, and of
    copies that carry different labels.

    Args:
        scans: The scanned cases.
        official: The split is the dataset's published one (MedMNIST), whose copies across
            splits are warned about, not refused.
        class_names: Class names in label order (the warnings name classes with them).

    Raises:
        DataError: naming both files and their splits.
    """
    by_digest: dict[str, list[CaseScan]] = defaultdict(list)
    for s in scans:
        if s.digest:
            by_digest[s.digest].append(s)
    groups = [g for g in by_digest.values() if len(g) > 1]
    across = [g for g in groups if len({s.split for s in g}) > 1]
    warnings = []
    if across and not official:
        a, b = across[0][0], next(s for s in across[0] if s.split != across[0][0].split)
        more = f" ({len(across) - 1} more such files)" if len(across) > 1 else ""
        raise DataError(
            f"{a.image!r} (case {a.id!r}, {a.split}) and {b.image!r} (case {b.id!r}, {b.split}) "
            f"hold the same content{more}: one image in two splits leaks evaluation data into "
            "training; delete one copy, or give the copies one patient_id (a patient stays in "
            "one split)")
    if across:
        a, b = across[0][0], next(s for s in across[0] if s.split != across[0][0].split)
        warnings.append(f"{_images(len(across))} identical in two splits of the dataset's own "
                        f"split (e.g. {a.id} in {a.split} and {b.id} in {b.split}); kept, as "
                        "published results use this split, but its test metrics are slightly "
                        "optimistic")
    conflicting = [g for g in groups
                   if len({repr(s.label) for s in g if s.label is not None}) > 1]
    if conflicting:
        a = conflicting[0][0]
        b = next(s for s in conflicting[0] if repr(s.label) != repr(a.label))
        warnings.append(f"{len(conflicting)} image{' has' if len(conflicting) == 1 else 's have'}"
                        f" an identical copy with another label (e.g. {a.image!r} labelled "
                        f"{_label(a.label, class_names)} and {b.image!r} labelled "
                        f"{_label(b.label, class_names)}): one of the two "
                        "labels is wrong, or the image cannot tell the classes apart; both are "
                        "kept; delete or relabel one to train on one answer")
    within = [g for g in groups if len({s.split for s in g}) == 1]
    if within:
        g = within[0]
        n = sum(len(g) - 1 for g in within)
        warnings.append(f"{n} image{' copies' if n == 1 else 's copy'} another image "
                        f"of the same split (e.g. {g[0].image!r} and {g[1].image!r}); they "
                        "count twice in training or in the metrics")
    return warnings


def _label(label: Any, class_names: list[str] | None) -> str:
    """A class label as its name where the names are known, else as stored."""
    if isinstance(label, numbers.Integral):
        index = int(label)
        return repr(class_names[index]) if class_names and 0 <= index < len(class_names) \
            else str(index)
    return repr(label)


def _images(n: int) -> str:
    """``"1 image is"`` or ``"N images are"``."""
    return f"{n} image is" if n == 1 else f"{n} images are"


def _split_hint(dl: Any, split: str) -> str:
    if dl.split_source:
        return f"the split comes from {dl.split_source}: move cases of another class into it"
    fraction = {"val": "val_fraction", "test": "test_fraction"}.get(split, "val_fraction")
    return (f"raise data.split.{fraction}, change data.split.seed, or add cases of the "
            "missing classes")


def _class_counts(dl: Any, scans: list[CaseScan]) -> list[str]:
    names = dl.class_names
    counts = {s: Counter(c.label for c in scans if c.split == s) for s in _SPLITS}
    everywhere = Counter(c.label for c in scans)
    if len(everywhere) < 2:
        only = names[next(iter(everywhere))] if everywhere else "none"
        raise DataError(f"{dl.describe()} has one class only ({only!r}, {len(scans)} cases): a "
                        "classifier needs at least two; add the cases of another class (for "
                        "class folders, a sub-folder per class), or check data.label_key")
    for split in _SPLITS:
        if len(counts[split]) < 2 and sum(counts[split].values()):
            only = names[next(iter(counts[split]))]
            what = "a classifier learns nothing from it" if split == "train" else \
                "its metrics (AUC, the decision threshold) need at least two classes"
            raise DataError(f"{dl.describe()}: the {split!r} split holds one class only "
                            f"({only!r}, {sum(counts[split].values())} cases): {what}; "
                            + _split_hint(dl, split))
    return [f"class {names[label]!r} has {counts['val'].get(label, 0)} validation case(s): its "
            "metrics and decision threshold will be noisy; raise data.split.val_fraction or "
            "add cases" for label in sorted(everywhere)
            if counts["val"].get(label, 0) < FEW_VALIDATION_CASES]


def _mask_counts(dl: Any, scans: list[CaseScan]) -> list[str]:
    names = dl.class_names
    warnings = []
    for split in _SPLITS:
        group = [s for s in scans if s.split == split]
        if group and not any(v for s in group for v in s.mask_values or () if v > 0):
            which = "every training mask" if split == "train" else \
                f"every mask of the {split!r} split"
            what = "nothing to learn" if split == "train" else "Dice and the other metrics " \
                "are undefined without foreground"
            raise DataError(f"{dl.describe()}: {which} is empty (all background), e.g. "
                            f"{(group[0].mask or group[0].image)!r}: {what}; check the mask files and "
                            "data.label_key, or " + _split_hint(dl, split))
    empty = Counter(s.split for s in scans if not any(v > 0 for v in s.mask_values or ()))
    if empty:
        per = ", ".join(f"{s} {empty.get(s, 0)}" for s in _SPLITS)
        warnings.append(f"{sum(empty.values())} of {len(scans)} masks are empty (all "
                        f"background; {per}): they teach background only and score Dice 1 or 0")
    val = [s for s in scans if s.split == "val"]
    for index in range(1, len(names)):
        n = sum(index in (s.mask_values or ()) for s in val)
        if n < FEW_VALIDATION_CASES:
            warnings.append(f"class {names[index]!r} is in {n} validation mask(s): its Dice "
                            "will be noisy; raise data.split.val_fraction or add cases")
    return warnings


def notify_once(message: str) -> None:
    """:func:`medxfer.errors.notify`, once per process per message (a command that loads
    the same data several times warns once)."""
    if message in _NOTIFIED:
        return
    _NOTIFIED.add(message)
    notify(message)


def forget_notified() -> None:
    """Let every message be shown again (tests)."""
    _NOTIFIED.clear()


#: How many files one line of :func:`reading_notes` names.
NAMED_FILES = 3


def reading_notes(dl: Any) -> list[str]:
    """What a run says about how it read ``dl``: the datalist's notices (what was assumed)
    and a line per reason files were excluded, naming a few of them."""
    lines = list(dl.notices)
    by_reason: dict[str, list[str]] = defaultdict(list)
    for item in dl.excluded:
        by_reason[item["reason"]].append(item["file"])
    for reason, files in by_reason.items():
        named = ", ".join(repr(f) for f in files[:NAMED_FILES])
        more = f" and {len(files) - NAMED_FILES} more" if len(files) > NAMED_FILES else ""
        lines.append(f"{len(files)} file{'s' if len(files) != 1 else ''} not used ({reason}): "
                     f"{named}{more}; `medxfer data inspect {dl.path}` lists each")
    return lines
