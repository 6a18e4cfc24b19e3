"""MONAI datalists: a JSON file with ``training``, ``validation`` and ``testing`` (or
MSD's ``test``) lists, read with :func:`monai.data.load_decathlon_datalist` (paths relative
to the file's folder).

The lists are the split, as given: ``training`` is train, ``validation`` val, ``testing``
test. A ``fold`` key on the training entries divides them into folds; the fold
``data.split.fold`` names (default 0) is then validation, unless a ``validation`` list is
given. A split the file lacks is drawn from its training entries by ``data.split``'s
fractions. Test entries without labels are not cases (``medxfer predict`` takes them).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from medxfer.data.datalist import Datalist
from medxfer.data.layouts.common import read_json
from medxfer.data.layouts.manifest import cases_from_rows
from medxfer.errors import DataError

#: The datalist keys and the split each is.
LIST_SPLITS = {"training": "train", "validation": "val", "testing": "test", "test": "test"}


def read_monai_datalist(path: Path, *, task: str | None, image_key: str, label_key: str,
                        declared: bool = False) -> Datalist:
    """The datalist of a MONAI datalist JSON (a file, or a folder's ``dataset.json``).

    Raises:
        DataError: naming the file, for a missing list, a list entry of the wrong form, a
            missing file or bad labels.
    """
    from monai.data import load_decathlon_datalist

    if path.is_dir():
        path = path / "dataset.json"
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DataError(f"{str(path)!r}: a MONAI datalist is a JSON object with 'training' "
                        "(and 'validation', 'testing') lists")
    rows: list[dict[str, Any]] = []
    unlabelled: list[str] = []
    used = [k for k in LIST_SPLITS if isinstance(meta.get(k), list) and meta[k]]
    if not used:
        raise DataError(f"{str(path)!r} has no non-empty 'training', 'validation' or "
                        "'testing' list")
    for key in used:
        try:
            if all(isinstance(e, str) for e in meta[key]):  # image paths only, as MSD's test
                entries = [{"image": os.path.normpath(os.path.join(path.parent, e))}
                           for e in meta[key]]
            else:
                entries = load_decathlon_datalist(path, is_segmentation=False,
                                                  data_list_key=key, base_dir=path.parent)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{str(path)!r}: its {key!r} list cannot be read ({exc}); each "
                            "entry is {\"image\": ..., \"label\": ...}") from None
        for n, entry in enumerate(entries):
            row = _row(entry, f"{path} {key}[{n}]", image_key, label_key)
            if key != "training" and label_key not in row and "mask" not in row:
                unlabelled.append(str(row[image_key]))
                continue
            row["split"] = LIST_SPLITS[key]
            rows.append(row)
    labelled_keys = {r["split"] for r in rows}
    dl = cases_from_rows(rows, meta, path, task=task, image_key=image_key, label_key=label_key,
                         declared=declared, layout="monai_datalist")
    for file in unlabelled:
        dl.exclude(file, "a testing entry without a label: not used by a run; `medxfer "
                         "predict` takes it")
        dl.test_images.append(file)
    _folds(dl, path)
    present = labelled_keys | ({"val"} if any("fold" in c for c in dl.cases) else set())
    if present == {"train"}:  # one list: no stored split
        for case in dl.cases:
            case["split"] = None
        dl.notices.append(f"{path.name} has a training list only: a run splits it by "
                          "data.split (seeded)")
        return dl
    dl.split_source = f"{path.name}'s " + ", ".join(k for k in used if LIST_SPLITS[k] in
                                                      labelled_keys) + " lists"
    dl.missing_splits = tuple(s for s in ("val", "test") if s not in present)
    dl.notices.append(f"the splits are {dl.split_source}, as given")
    if dl.missing_splits:
        dl.notices.append(f"{path.name} has no {' or '.join(dl.missing_splits)} cases: a run "
                          "draws them from its training list by data.split's fractions")
    return dl


def _row(entry: dict[str, Any], where: str, image_key: str, label_key: str) -> dict[str, Any]:
    """A manifest row from a datalist entry: a list of images is one image's channels."""
    row = dict(entry)
    image = row.get(image_key)
    if isinstance(image, list):
        if not image:
            raise DataError(f"{where}: {image_key!r} is an empty list")
        row[image_key], row["image_files"] = image[0], list(image)
    if image is None:
        raise DataError(f"{where}: has no {image_key!r} (data.image_key)")
    if isinstance(row.get(label_key), list):
        raise DataError(f"{where}: {label_key!r} is a list; give one mask file per case (or "
                        "a class label)")
    return row


def _folds(dl: Datalist, path: Path) -> None:
    """Keep the ``fold`` key of training cases as an int; say how many folds there are."""
    folds = set()
    for case in dl.cases:
        if case.get("fold") in (None, ""):
            case.pop("fold", None)
            continue
        try:
            case["fold"] = int(case["fold"])
        except (TypeError, ValueError):
            raise DataError(f"{str(path)!r}: case {case['id']!r} has fold {case['fold']!r}, "
                            "not a whole number") from None
        folds.add(case["fold"])
    if folds and any(c.get("split") == "val" for c in dl.cases):
        dl.notices.append(f"{path.name} has a validation list and fold keys: the validation "
                          "list is validation, the fold keys are not used")
        for case in dl.cases:
            case.pop("fold", None)
    elif folds:
        dl.notices.append(f"{path.name} divides its training cases into folds "
                          f"{sorted(folds)}: the fold data.split.fold names (default 0) is "
                          "validation")
