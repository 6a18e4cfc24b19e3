"""Datalists: the cases of a dataset, from a manifest, an MSD folder, class folders or npz.

A case is a plain dict: ``id``, ``image`` (a path, or ``npz:<file>#<split>/<index>``),
``label`` (class index, float target or mask path; ``None`` when unlabelled),
``patient_id``, ``domain`` and ``split`` (``None`` when the data has no stored split),
plus any other manifest column.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medxfer.data.medmnist import SPLITS, MedMNISTData, load_medmnist
from medxfer.data.readers import (
    IMAGE_SUFFIXES,
    _is_dicom,
    dicom_folders,
    image_kind,
    list_dicom_series,
)
from medxfer.errors import DataError
from medxfer.tasks import label_kind

MANIFEST_NAMES = ("manifest.csv", "manifest.json", "datalist.csv", "datalist.json")
FORMATS = ("folder", "manifest", "medmnist", "msd", "dicom")
#: The :attr:`Datalist.class_order` values that nobody declared: names sorted
#: alphabetically, with the words that say so.
IMPLICIT_CLASS_ORDERS = {"folders": "its folder names, alphabetical",
                         "sorted": "its label names, alphabetical"}


@dataclass
class Datalist:
    """Every case of a dataset and what is known about the dataset as a whole.

    Attributes:
        name: Short dataset name (file or folder stem), used for output file names.
        format: One of :data:`FORMATS`.
        path: The dataset file or folder.
        task: ``classification``, ``regression``, ``segmentation`` or ``unlabelled``.
        cases: One dict per case (see the module docstring).
        class_names: Class names in label order (segmentation: including background).
        spatial_dims: 2 or 3 when known from the format, else ``None``.
        modality: ``CT``/``MR``/... when the dataset declares it.
        medmnist: The arrays of a MedMNIST file (``format == "medmnist"`` only).
        class_order: Where the order of ``class_names`` comes from: ``declared``
            (``data.classes``), ``manifest`` (its ``classes`` list or ``classes.txt``),
            ``numbers`` (numbered labels), ``dataset`` (the MedMNIST or MSD label numbers),
            ``folders`` (class folder names, alphabetical) or ``sorted`` (a manifest's label
            names, alphabetical); ``""`` when the labels are not classes.
    """

    name: str
    format: str
    path: str
    task: str
    cases: list[dict[str, Any]]
    class_names: list[str] = field(default_factory=list)
    spatial_dims: int | None = None
    modality: str | None = None
    medmnist: MedMNISTData | None = None
    class_order: str = ""

    def describe(self) -> str:
        """One line: format, path and case count."""
        return f"{self.format} dataset {self.name!r} at {self.path} ({len(self.cases)} cases)"

    @property
    def label_kind(self) -> str | None:
        """What the labels are (see :data:`medxfer.tasks.LabelKind`); ``None`` when unlabelled."""
        return label_kind(self.task)


def stem(path: str | os.PathLike[str]) -> str:
    """File name without its image suffix (``a.nii.gz`` -> ``a``)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES + (".npz", ".csv", ".json"), key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess the layout of ``path``: medmnist, msd, manifest, folder or dicom.

    Raises:
        DataError: when the path does not exist or its layout is not recognised.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if path.is_file():
        name = path.name.lower()
        if name.endswith(".npz"):
            return "medmnist"
        if name == "dataset.json":
            return "msd"
        if name.endswith((".csv", ".json")):
            return "manifest"
        raise DataError(f"data path {str(path)!r}: a dataset file must be .npz (MedMNIST), "
                        ".csv/.json (manifest) or dataset.json (MSD)")
    if (path / "dataset.json").is_file():
        return "msd"
    if any((path / name).is_file() for name in MANIFEST_NAMES):
        return "manifest"
    children = sorted(path.iterdir())
    if any(c.is_dir() and not c.name.startswith(".") and _has_images(c) for c in children):
        if any(_is_dicom(p) for c in children if c.is_dir() for p in sorted(c.iterdir())[:3]):
            return "dicom"
        return "folder"
    if any(_is_dicom(p) for p in children[:20]):
        return "dicom"
    if dicom_folders(path, limit=1):  # a patient or study folder: DICOM series below it
        return "dicom"
    raise DataError(f"data path {str(path)!r}: cannot tell its layout (expected dataset.json, "
                    f"a manifest ({', '.join(MANIFEST_NAMES)}), class sub-folders of images or "
                    "DICOM files); set data.format (`medxfer data inspect`: --format)")


def _has_images(folder: Path) -> bool:
    return any(image_kind(p) is not None and p.is_file() or _is_dicom(p)
               for p in sorted(folder.iterdir())[:50])


def build_datalist(path: str | os.PathLike[str], *, format: str = "auto",
                   task: str | None = None, classes: list[str] | None = None,
                   image_key: str = "image", label_key: str = "label") -> Datalist:
    """Read the cases of the dataset at ``path``.

    Args:
        path: Dataset file or folder.
        format: ``auto`` or one of :data:`FORMATS`.
        task: The task the labels must serve; ``None`` infers it (for inspection).
        classes: Declared class names in label order (labels outside them are an error).
        image_key: Manifest column of image paths.
        label_key: Manifest column of labels or mask paths (``mask`` is used when
            ``label`` is absent).

    Returns:
        The datalist.

    Raises:
        DataError: for a missing path, an unknown layout, missing files or bad labels.
    """
    path = Path(path).expanduser()
    fmt = detect_format(path) if format == "auto" else format
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if fmt == "medmnist":
        dl = _medmnist_datalist(path)
    elif fmt == "msd":
        dl = _msd_datalist(path if path.is_dir() else path.parent)
    elif fmt == "manifest":
        dl = _manifest_datalist(path, task, image_key, label_key, declared=classes is not None)
    elif fmt == "folder":
        dl = _folder_datalist(path)
    elif fmt == "dicom":
        dl = _dicom_datalist(path)
    else:
        raise DataError(f"data.format {fmt!r} is unknown; use one of auto, {', '.join(FORMATS)}")
    if classes is not None and dl.label_kind in ("class", "mask"):
        _apply_declared_classes(dl, classes)
    if task is not None and dl.task not in (task, "unlabelled"):
        raise DataError(f"{dl.describe()} has {dl.task} labels but the run's task is {task!r}")
    return dl


def _apply_declared_classes(dl: Datalist, classes: list[str]) -> None:
    if dl.label_kind == "class":
        names = dl.class_names
        mapping = {}
        used = sorted({c["label"] for c in dl.cases if c["label"] is not None})
        for i in used:
            name = names[i]
            if name in classes:
                mapping[i] = classes.index(name)
            elif name.isdigit() and int(name) < len(classes):
                mapping[i] = int(name)
            else:
                bad = [c["id"] for c in dl.cases if c["label"] == i][:3]
                raise DataError(f"{dl.path}: label {name!r} (cases {', '.join(bad)}) is not one "
                                f"of the declared data.classes {classes}")
        for case in dl.cases:
            if case["label"] is not None:
                case["label"] = mapping[case["label"]]
    elif len(classes) < 2:
        raise DataError("data.classes for segmentation must include the background class")
    dl.class_names = list(classes)
    dl.class_order = "declared"


def _medmnist_datalist(path: Path) -> Datalist:
    data = load_medmnist(path)
    cases = []
    for split in SPLITS:
        for i, label in enumerate(data.labels[split].tolist()):
            cid = f"{split}_{i:05d}"
            cases.append({"id": cid, "image": f"npz:{path.name}#{split}/{i}", "label": int(label),
                          "patient_id": cid, "domain": None, "split": split})
    return Datalist(data.name, "medmnist", str(path), "classification", cases,
                    data.class_names, data.spatial_dims, None, medmnist=data,
                    class_order="dataset")


def _require_file(base: Path, rel: str, where: str) -> str:
    full = (base / rel).resolve() if not Path(rel).is_absolute() else Path(rel)
    if not full.exists():
        raise DataError(f"{where}: {rel!r} does not exist (looked for {str(full)!r})")
    return str(full)


def _msd_datalist(folder: Path) -> Datalist:
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        raise DataError(f"{str(folder)!r} has no dataset.json, so it is not a Medical "
                        "Segmentation Decathlon folder (format msd); give the task folder, or "
                        "another data.format")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{str(meta_path)!r} is not valid JSON ({exc})") from None
    entries = meta.get("training") if isinstance(meta, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{str(meta_path)!r} has no 'training' list of {{image, label}} entries")
    labels = meta.get("labels") or {"0": "background", "1": "foreground"}
    class_names = [str(labels[k]) for k in sorted(labels, key=lambda k: int(k))]
    modalities = list((meta.get("modality") or {}).values())
    modality = {"MRI": "MR", "T1": "MR", "T2": "MR", "FLAIR": "MR"}.get(
        str(modalities[0]).upper(), str(modalities[0]).upper()) if modalities else None
    cases = []
    for n, entry in enumerate(entries):
        where = f"{meta_path} training[{n}]"
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{where}: expected {{image, label}}")
        image = _require_file(folder, entry["image"], where)
        label = _require_file(folder, entry["label"], where) if entry.get("label") else None
        cid = stem(image)
        cases.append({"id": cid, "image": image, "label": label, "patient_id": cid,
                      "domain": None, "split": None})
    task = "segmentation" if all(c["label"] for c in cases) else "unlabelled"
    dims = 3 if str(meta.get("tensorImageSize", "3D")).upper() in ("3D", "4D") else 2
    return Datalist(folder.name, "msd", str(folder), task, cases, class_names, dims, modality,
                    class_order="dataset")


def _folder_datalist(folder: Path) -> Datalist:
    class_dirs = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    cases = []
    class_names = []
    for class_dir in class_dirs:
        files = [p for p in sorted(class_dir.iterdir())
                 if p.is_file() and image_kind(p) is not None and not p.name.startswith(".")]
        if not files:
            continue
        label = len(class_names)
        class_names.append(class_dir.name)
        for p in files:
            cid = f"{class_dir.name}/{stem(p)}"
            cases.append({"id": cid, "image": str(p.resolve()), "label": label, "patient_id": cid,
                          "domain": None, "split": None})
    if len(class_names) < 2:
        raise DataError(f"{str(folder)!r}: a class-folder dataset needs at least two sub-folders "
                        f"with images; found {class_names or 'none'}")
    return Datalist(folder.name, "folder", str(folder), "classification", cases, class_names,
                    class_order="folders")


def _dicom_datalist(folder: Path) -> Datalist:
    cases = []
    for d in dicom_folders(folder):
        for uid in list_dicom_series(d):
            rel = d.relative_to(folder).as_posix()
            cid = rel if rel != "." else folder.name
            cases.append({"id": cid, "image": str(d), "label": None, "patient_id": None,
                          "domain": None, "split": None, "series_uid": uid})
    if not cases:
        raise DataError(f"{str(folder)!r} holds no DICOM files")
    if len({c["id"] for c in cases}) < len(cases):
        for c in cases:
            c["id"] = f"{c['id']}:{c['series_uid'][-8:]}"
    return Datalist(folder.name, "dicom", str(folder), "unlabelled", cases, [], 3)


# ---------------------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------------------


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


def _manifest_datalist(path: Path, task: str | None, image_key: str, label_key: str, *,
                       declared: bool = False) -> Datalist:
    if path.is_dir():
        path = next(path / n for n in MANIFEST_NAMES if (path / n).is_file())
    rows, meta = _read_rows(path)
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
        image = _require_file(base, str(row[image_key]), where)
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
            case["label"] = _require_file(base, str(raw_labels[n]), where)
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
    if len({c["id"] for c in cases}) < len(cases):
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
    class_names: list[str] = []
    class_order = ""
    if kind == "class" and has_labels:
        class_names, class_order = _encode_classes(cases, path, _declared_order(path, meta),
                                                   declared=declared)
    elif kind == "mask":
        class_names = ["background", "foreground"]
    elif kind == "value":
        class_names = [label_key]
    name = path.parent.name if path.name in MANIFEST_NAMES else stem(path)
    return Datalist(name, "manifest", str(path), task if has_labels else "unlabelled", cases,
                    class_names, class_order=class_order)


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
