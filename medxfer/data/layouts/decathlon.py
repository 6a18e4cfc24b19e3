"""Medical Segmentation Decathlon folders and nnU-Net raw datasets.

* **MSD**: ``imagesTr/`` + ``labelsTr/`` [+ ``imagesTs/``]. With ``dataset.json`` its
  ``training`` list names the cases and ``labels`` the classes; without it an image and
  its label share a file name, and the masks are binary unless ``data.classes`` says more.
* **nnU-Net raw**: ``imagesTr/CASE_0000.ext`` (one file per channel, numbered as
  ``dataset.json``'s ``channel_names``), ``labelsTr/CASE.ext``, ``labels`` mapping class
  names to values.

Test images without labels (``imagesTs/``) are not cases: they are listed as excluded
(``medxfer predict`` takes them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medxfer.data.datalist import Datalist, assume_binary_masks, stem
from medxfer.data.layouts.common import CHANNEL_SUFFIX, read_json, visible_files
from medxfer.data.layouts.manifest import require_file
from medxfer.data.readers import image_kind
from medxfer.errors import DataError

_MODALITIES = {"MRI": "MR", "T1": "MR", "T2": "MR", "FLAIR": "MR", "ADC": "MR", "DWI": "MR"}
#: ``imagesTs/`` images are excluded for this reason.
TEST_IMAGES = "a test image without a label (imagesTs/): not used by a run; `medxfer predict` " \
              "takes it"


def modality_of(names: list[Any]) -> str | None:
    """The dataset modality from MSD ``modality`` or nnU-Net ``channel_names`` values."""
    if not names:
        return None
    first = str(names[0]).upper()
    return _MODALITIES.get(first, first)


def read_msd(folder: Path) -> Datalist:
    """An MSD task folder, with or without ``dataset.json``.

    Raises:
        DataError: naming ``dataset.json`` and the entry, for a missing file or bad JSON.
    """
    meta_path = folder / "dataset.json"
    if not meta_path.is_file():
        return _msd_by_names(folder)
    meta = read_json(meta_path)
    entries = meta.get("training") if isinstance(meta, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{str(meta_path)!r} has no 'training' list of {{image, label}} entries")
    cases = []
    for n, entry in enumerate(entries):
        where = f"{meta_path} training[{n}]"
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(f"{where}: expected {{image, label}}")
        image = require_file(folder, entry["image"], where)
        label = require_file(folder, entry["label"], where) if entry.get("label") else None
        cid = stem(image)
        cases.append({"id": cid, "image": image, "label": label, "patient_id": cid,
                      "domain": None, "split": None})
    task = "segmentation" if all(c["label"] for c in cases) else "unlabelled"
    dims = 3 if str(meta.get("tensorImageSize", "3D")).upper() in ("3D", "4D") else 2
    dl = Datalist(folder.name, "msd", str(folder), task, cases, [], dims,
                  modality_of(list((meta.get("modality") or {}).values())))
    if meta.get("labels"):
        labels = meta["labels"]
        dl.class_names = [str(labels[k]) for k in sorted(labels, key=lambda k: int(k))]
        dl.class_order = "dataset"
    elif task != "unlabelled":
        assume_binary_masks(dl)
    listed = {str(Path(c[k]).resolve()) for c in cases for k in ("image", "label") if c[k]}
    for sub in ("imagesTr", "labelsTr"):
        for path in visible_files(folder / sub) + _hidden(folder / sub):
            if str(path.resolve()) not in listed:
                dl.exclude(path, _hidden_reason(path) or "not listed in dataset.json's training "
                                                          "list")
    _exclude_test_images(dl, folder)
    return dl


def _msd_by_names(folder: Path) -> Datalist:
    images = [p for p in visible_files(folder / "imagesTr") if image_kind(p)]
    labels = {p.name: p for p in visible_files(folder / "labelsTr") if image_kind(p)}
    labelled = bool(labels)
    dl = Datalist(folder.name, "msd", str(folder), "segmentation" if labelled else "unlabelled",
                  [])
    for path in images:
        label = labels.pop(path.name, None)
        if labelled and label is None:
            dl.exclude(path, f"no label file labelsTr/{path.name}")
            continue
        cid = stem(path)
        dl.cases.append({"id": cid, "image": str(path.resolve()),
                         "label": str(label.resolve()) if label else None, "patient_id": cid,
                         "domain": None, "split": None})
    for name, path in sorted(labels.items()):
        dl.exclude(path, f"no image file imagesTr/{name}")
    for sub in ("imagesTr", "labelsTr"):
        for path in _hidden(folder / sub):
            dl.exclude(path, _hidden_reason(path))
    if not dl.cases:
        raise DataError(f"{str(folder / 'imagesTr')!r} holds no image that has a label file of "
                        "the same name in labelsTr/")
    dl.notices.append("no dataset.json: each imagesTr/ file is a case with the labelsTr/ file "
                      "of the same name" if labelled else
                      "no dataset.json and no labelsTr/: the images are unlabelled")
    if labelled:
        assume_binary_masks(dl)
    _exclude_test_images(dl, folder)
    return dl


def read_nnunet(folder: Path) -> Datalist:
    """An nnU-Net raw dataset folder (``dataset.json`` optional).

    Raises:
        DataError: naming ``dataset.json``, for region labels or labels that are not
            numbered ``0 .. C-1``; or when no case has every channel and a label.
    """
    meta_path = folder / "dataset.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    meta = meta if isinstance(meta, dict) else {}
    channel_names = {int(k): str(v) for k, v in (meta.get("channel_names") or
                                                 meta.get("modality") or {}).items()}
    by_case: dict[str, dict[int, Path]] = {}
    dl = Datalist(folder.name, "nnunet", str(folder), "segmentation", [],
                  modality=modality_of([channel_names[k] for k in sorted(channel_names)]))
    for path in visible_files(folder / "imagesTr"):
        match = CHANNEL_SUFFIX.match(stem(path))
        if not image_kind(path) or match is None:
            dl.exclude(path, "not an image named CASE_0000 (nnU-Net's channel suffix)")
            continue
        by_case.setdefault(match["case"], {})[int(match["channel"])] = path
    n_channels = len(channel_names) or max((max(c) + 1 for c in by_case.values()), default=1)
    labels = {stem(p): p for p in visible_files(folder / "labelsTr") if image_kind(p)}
    for case_id, channels in sorted(by_case.items()):
        missing = [f"{k:04d}" for k in range(n_channels) if k not in channels]
        label = labels.pop(case_id, None)
        reason = (f"lacks channel file(s) {', '.join(missing)}" if missing else
                  f"no label file labelsTr/{case_id}.*" if label is None else "")
        if reason:
            for path in channels.values():
                dl.exclude(path, f"case {case_id!r} {reason}")
            continue
        files = [str(channels[k].resolve()) for k in range(n_channels)]
        case: dict[str, Any] = {"id": case_id, "image": files[0], "label": str(label.resolve()),
                                "patient_id": case_id, "domain": None, "split": None}
        if n_channels > 1:
            case["image_files"] = files
        dl.cases.append(case)
    for name, path in sorted(labels.items()):
        dl.exclude(path, f"no image files imagesTr/{name}_0000.*")
    if not dl.cases:
        raise DataError(f"{str(folder)!r}: no nnU-Net case has every channel file in imagesTr/ "
                        "and a label file in labelsTr/")
    _nnunet_classes(dl, meta, meta_path)
    if channel_names:
        dl.notices.append(f"nnU-Net channels: " + ", ".join(
            f"_{k:04d} {v}" for k, v in sorted(channel_names.items())))
    _exclude_test_images(dl, folder)
    return dl


def _nnunet_classes(dl: Datalist, meta: dict[str, Any], meta_path: Path) -> None:
    labels = meta.get("labels")
    if not labels:
        assume_binary_masks(dl)
        return
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise DataError(f"{str(meta_path)!r}: region-based labels (a class given as a list of "
                        "values) are not supported; give each class one value")
    try:  # nnU-Net v2: name -> value; v1: value -> name
        by_value = {int(v): str(k) for k, v in labels.items()}
    except (TypeError, ValueError):
        by_value = {int(k): str(v) for k, v in labels.items()}
    if sorted(by_value) != list(range(len(by_value))):
        raise DataError(f"{str(meta_path)!r}: labels {labels} must be numbered 0 .. C-1 "
                        "(0 background)")
    dl.class_names = [by_value[v] for v in range(len(by_value))]
    dl.class_order = "dataset"


def _exclude_test_images(dl: Datalist, folder: Path) -> None:
    for path in visible_files(folder / "imagesTs"):
        dl.exclude(path, TEST_IMAGES)
        dl.test_images.append(str(path.resolve()))


def _hidden(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.startswith(".")
            and image_kind(p) is not None]


def _hidden_reason(path: Path) -> str:
    if not path.name.startswith("."):
        return ""
    if path.name.startswith("._"):
        return "a hidden macOS resource file ('._' prefix), not an image"
    return "a hidden file"
