"""Manifests: a CSV or JSON file with a row per case (``image``, ``label`` or ``mask``,
optional ``patient_id``, ``domain``, ``split`` and any other column).

The rows are turned into cases by :func:`cases_from_rows`, which the MONAI datalist reader
shares. Image files under the manifest's folder that no row lists are reported as
excluded (not listed).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from medxfer.data.datalist import Datalist, assume_binary_masks, stem
from medxfer.data.layouts.common import MANIFEST_NAMES
from medxfer.data.masks import case_files
from medxfer.data.medmnist import SPLITS
from medxfer.data.readers import image_kind
from medxfer.errors import DataError
from medxfer.tasks import label_kind

#: At most this many files under a manifest's folder are compared with its rows.
UNLISTED_SCAN_LIMIT = 20000


def require_file(base: Path, rel: str, where: str) -> str:
    """The absolute path of ``rel`` (relative to ``base``).

    Raises:
        DataError: naming ``where`` and the path looked for, when it does not exist.
    """
    full = (base / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
    if not full.exists():
        raise DataError(f"{where}: {rel!r} does not exist (looked for {str(full)!r})")
    return str(full)


def read_manifest(path: Path, *, task: str | None, image_key: str, label_key: str,
                  declared: bool = False) -> Datalist:
    """The datalist of a manifest file (or of the folder holding one).

    Raises:
        DataError: naming the manifest, the row and what to change.
    """
    if path.is_dir():
        path = next(path / n for n in MANIFEST_NAMES if (path / n).is_file())
    rows, meta = _read_rows(path)
    dl = cases_from_rows(rows, meta, path, task=task, image_key=image_key,
                         label_key=label_key, declared=declared, layout="manifest")
    if any(c.get("split") for c in dl.cases):
        dl.split_source = f"the {path.name} split column"
    report_unlisted(dl, path.parent, path.name)
    return dl


def cases_from_rows(rows: list[dict[str, Any]], meta: dict[str, Any], path: Path, *,
                    task: str | None, image_key: str, label_key: str, declared: bool,
                    layout: str) -> Datalist:
    """Cases from manifest rows (paths relative to the manifest's folder).

    Raises:
        DataError: naming the manifest and row, for missing columns, files or labels.
    """
    if not rows:
        raise DataError(f"manifest {str(path)!r} has no rows")
    if image_key not in rows[0]:
        # the header is not quoted: the file may be any file, not a manifest
        count = f"{len(rows[0])} column" + ("s" if len(rows[0]) != 1 else "")
        raise DataError(f"manifest {str(path)!r} has no {image_key!r} column (data.image_key) "
                        f"among its {count}; set data.image_key and data.label_key to the "
                        "names of its image and label columns")
    if label_key not in rows[0] and label_key == "label" and "mask" in rows[0]:
        label_key = "mask"
    has_labels = label_key in rows[0]
    base = path.parent
    raw_labels = [r.get(label_key) if has_labels else None for r in rows]
    if task is None:
        task = _infer_task(raw_labels, base) if has_labels else "unlabelled"
    kind = label_kind(task)
    cases = []
    for n, row in enumerate(rows):
        where = f"manifest {str(path)!r} row {n + 1}"
        image = require_file(base, str(row[image_key]), where)
        case = {k: v for k, v in row.items() if k not in (image_key, label_key)}
        case.update({"image": image, "label": raw_labels[n]})
        case["id"] = str(row.get("id") or stem(image))
        for key in ("patient_id", "domain", "split"):
            case[key] = str(row[key]) if row.get(key) not in (None, "") else None
        if case["split"] is not None and case["split"] not in SPLITS:
            raise DataError(f"{where}: split {case['split']!r} must be one of {', '.join(SPLITS)}")
        if has_labels and raw_labels[n] in (None, ""):
            raise DataError(f"{where}: the {label_key!r} value is empty")
        if kind == "mask" and has_labels:
            case["label"] = require_file(base, str(raw_labels[n]), where)
        elif kind == "value" and has_labels:
            try:
                case["label"] = float(raw_labels[n])
            except (TypeError, ValueError):
                raise DataError(f"{where}: regression target {raw_labels[n]!r} is not a number") \
                    from None
            if not math.isfinite(case["label"]):
                raise DataError(f"{where}: regression target {raw_labels[n]!r} is not a finite "
                                "number; fix or drop the row")
        cases.append(case)
    _unique_ids(cases, base, path)
    class_names: list[str] = []
    class_order = ""
    if kind == "class" and has_labels:
        class_names, class_order = _encode_classes(cases, path, _declared_order(path, meta),
                                                   declared=declared)
    elif kind == "mask" and isinstance(meta.get("labels"), dict) and meta["labels"]:
        labels = meta["labels"]  # MSD style: {"0": "background", "1": ...}
        class_names = [str(labels[k]) for k in sorted(labels, key=lambda k: int(k))]
        class_order = "dataset"
    elif kind == "mask":
        class_names, class_order = ["background", "foreground"], "assumed"
    elif kind == "value":
        class_names = [label_key]
    name = path.parent.name if path.name in MANIFEST_NAMES else stem(path)
    dl = Datalist(name, layout, str(path), task if has_labels else "unlabelled", cases,
                  class_names, class_order=class_order)
    if class_order == "assumed":
        assume_binary_masks(dl)
    return dl


def _unique_ids(cases: list[dict[str, Any]], base: Path, path: Path) -> None:
    if len({c["id"] for c in cases}) == len(cases):
        return
    for c in cases:
        c["id"] = Path(c["image"]).relative_to(base).as_posix() \
            if Path(c["image"]).is_relative_to(base) else c["image"]
        if c.get("series_uid"):  # one DICOM folder, several series: a case per series
            c["id"] += f"#{c['series_uid']}"
    seen: set[str] = set()
    for c in cases:
        if c["id"] in seen:
            raise DataError(f"manifest {str(path)!r}: image {c['image']!r} is listed in more "
                            "than one row (as the same series); list each case once")
        seen.add(c["id"])


def report_unlisted(dl: Datalist, folder: Path, listing: str) -> None:
    """Record the image files under ``folder`` that no case uses as excluded (not listed
    in ``listing``); at most :data:`UNLISTED_SCAN_LIMIT` files are looked at."""
    used = {str(Path(f).resolve()) for c in dl.cases for key in ("image", "label")
            for f in case_files(c, key) if isinstance(f, str)}
    used_dirs = {u for u in used if Path(u).is_dir()}
    seen = 0
    for file in sorted(folder.rglob("*")):
        seen += 1
        if seen > UNLISTED_SCAN_LIMIT:
            dl.notices.append(f"{str(folder)!r} holds more than {UNLISTED_SCAN_LIMIT} files; "
                              f"only those were compared with {listing}")
            return
        if not file.is_file() or any(part.startswith(".") for part in file.parts[-2:]) \
                or image_kind(file) is None:
            continue
        resolved = str(file.resolve())
        if resolved not in used and str(file.parent.resolve()) not in used_dirs:
            dl.exclude(file, f"not listed in {listing}")


def _declared_order(path: Path, meta: dict[str, Any]) -> list[str] | None:
    """Class names in label order from a JSON manifest's ``classes`` or ``classes.txt``."""
    if isinstance(meta.get("classes"), list):
        return [str(c) for c in meta["classes"]]
    sidecar = path.parent / "classes.txt"
    if sidecar.is_file():
        return [ln.strip() for ln in sidecar.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return None


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"manifest {str(path)!r} cannot be read ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"manifest {str(path)!r} is not valid JSON ({exc})") from None
        meta = data if isinstance(data, dict) else {}
        if isinstance(data, dict):
            data = next((data[k] for k in ("data", "cases", "training") if k in data), None)
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"manifest {str(path)!r}: expected a list of objects (or "
                            "{\"data\": [...]})")
        return data, meta
    rows = list(csv.DictReader(text.splitlines()))
    return [{k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k}
            for r in rows], {}
def _infer_task(labels: list[Any], base: Path) -> str:
    values = [v for v in labels if v not in (None, "")]
    if values and all(isinstance(v, str) and image_kind(v) is not None and (base / v).exists()
                      for v in values[:5]):
        return "segmentation"
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        return "classification"
    if any(not math.isfinite(f) or f != int(f) for f in floats) \
            or len(set(floats)) > max(20, len(floats) // 2):
        return "regression"
    return "classification"


def _encode_classes(cases: list[dict[str, Any]], path: Path, order: list[str] | None, *,
                    declared: bool = False) -> tuple[list[str], str]:
    """Turn raw labels into indices: integers keep their value, names follow ``order``
    (or sorted order when the manifest declares none).

    Without a declared order (``order`` from the manifest, or ``declared``: ``data.classes``
    will map the names), labels must be all numbers or all names, and names must not differ
    only in case: each distinct value would silently become a class of its own.

    Returns:
        The class names in label order and where that order comes from
        (:attr:`Datalist.class_order`).

    Raises:
        DataError: naming the manifest and examples, for the labels refused above, a
            negative number or a label outside the declared order.
    """
    raw = [c["label"] for c in cases]
    if order is None and not declared:
        _check_label_kinds(cases, path)
    if order is not None:
        for c in cases:
            value = str(c["label"])
            if value in order:
                c["label"] = order.index(value)
            elif value.isdigit() and int(value) < len(order):
                c["label"] = int(value)
            else:
                raise DataError(f"manifest {str(path)!r}: case {c['id']!r} has label {value!r}, "
                                f"not one of the declared classes {order}")
        return list(order), "manifest"
    if all(_is_number(v) for v in raw):
        ints = [int(v) for v in raw]
        if min(ints) < 0:
            bad = cases[ints.index(min(ints))]
            raise DataError(f"manifest {str(path)!r}: case {bad['id']!r} has negative label "
                            f"{min(ints)}")
        for c, v in zip(cases, ints):
            c["label"] = v
        return [str(i) for i in range(max(ints) + 1)], "numbers"
    names = sorted({str(v) for v in raw})
    for c in cases:
        c["label"] = names.index(str(c["label"]))
    return names, "sorted"


def _is_number(label: Any) -> bool:
    """Whether a raw class label is a class number (``1``, ``"1"``, ``"-1"``)."""
    return (isinstance(label, int) and not isinstance(label, bool)) or \
        (isinstance(label, str) and label.lstrip("-").isdigit())


def _check_label_kinds(cases: list[dict[str, Any]], path: Path) -> None:
    """Refuse class labels that mix numbers and names, or names that differ only in case.

    Raises:
        DataError: naming the manifest, example labels with their cases, and what to do.
    """
    first: dict[str, str] = {}  # each distinct label -> its first case
    for c in cases:
        first.setdefault(str(c["label"]), str(c["id"]))
    numbers = [v for v in first if _is_number(v)]
    names = [v for v in first if not _is_number(v)]

    def examples(values: list[str]) -> str:
        shown = ", ".join(f"{v!r} (case {first[v]!r})" for v in values[:3])
        return shown + (f" and {len(values) - 3} more" if len(values) > 3 else "")

    if numbers and names:
        raise DataError(
            f"manifest {str(path)!r} mixes class numbers and class names in its labels "
            f"(numbers: {examples(numbers)}; names: {examples(names)}), so each would be a "
            "class of its own: use one kind for every case (the class names, or the numbers "
            "0 .. C-1), or declare the class names in order (a classes.txt beside the "
            "manifest, a JSON manifest's 'classes' list or data.classes), which the numbers "
            "then index")
    spellings: dict[str, list[str]] = {}
    for name in names:
        spellings.setdefault(name.casefold(), []).append(name)
    clashes = [group for group in spellings.values() if len(group) > 1]
    if clashes:
        shown = "; ".join(examples(group) for group in clashes[:3])
        raise DataError(
            f"manifest {str(path)!r} has class labels that differ only in case ({shown}), "
            "so each spelling would be a class of its own: spell each class one way in every "
            "row; if they really are different classes, declare the class names in order "
            "(a classes.txt beside the manifest, a JSON 'classes' list or data.classes)")
