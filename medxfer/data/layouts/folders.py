"""Folders of image files: one sub-folder per class (ImageNet style, optionally inside
``train/``, ``val/``, ``test/`` split folders), or a plain folder of images.

A file whose name marks a mask (``NAME_mask.png``, ``NAME_seg.png``, ``NAME_label.png``;
see :mod:`medxfer.data.masks`) is never an image. With masks beside the images the folder
is a segmentation dataset: each image with its mask(s) is a case (several masks of one
image are merged by union) and, in class folders, keeps its folder's class in ``class``.
A classification run reads the same class folders as classification, without the masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medxfer.data.datalist import Datalist, assume_binary_masks, stem
from medxfer.data.layouts.common import SPLIT_DIRS, has_images, image_kind_of
from medxfer.data.masks import image_stem_of_mask, is_mask_name
from medxfer.errors import DataError
from medxfer.tasks import label_kind


def pair_masks(files: list[Path], dl: Datalist, where: str) -> dict[Path, list[Path]]:
    """The images among ``files`` and the masks of each (mask-like names, matched to the
    image of the same folder whose stem precedes the marker). Masks without an image, and
    files that are not images, are recorded as excluded.

    Returns:
        Image -> its masks (empty when it has none), images in file order.
    """
    images: dict[Path, list[Path]] = {}
    by_stem: dict[tuple[Path, str], Path] = {}
    masks = []
    for path in files:
        if not image_kind_of(path):
            dl.exclude(path, "not an image file medxfer reads")
        elif is_mask_name(stem(path)):
            masks.append(path)
        else:
            images[path] = []
            by_stem[(path.parent, stem(path).casefold())] = path
    for mask in masks:
        owner = by_stem.get((mask.parent, image_stem_of_mask(stem(mask)).casefold()))
        if owner is None:
            dl.exclude(mask, f"named like a mask, but {where} has no image "
                             f"{image_stem_of_mask(stem(mask))!r} beside it")
        else:
            images[owner].append(mask)
    return images


def read_class_folders(folder: Path, *, task: str | None) -> Datalist:
    """Class folders (or split folders of class folders) of ``folder``.

    Raises:
        DataError: for fewer than two classes (classification), or a segmentation task
            without masks.
    """
    dl = Datalist(folder.name, "folder", str(folder), "classification", [])
    splits = {d: SPLIT_DIRS[d.name.lower()] for d in sorted(folder.iterdir())
              if d.is_dir() and d.name.lower() in SPLIT_DIRS}
    if splits and any(any(s.is_dir() and has_images(s) for s in d.iterdir()) for d in splits):
        roots = list(splits)
    else:
        roots, splits = [folder], {}
    found: list[tuple[str | None, str, dict[Path, list[Path]]]] = []
    for root in roots:
        for class_dir in sorted(d for d in root.iterdir() if d.is_dir()
                                and not d.name.startswith(".")):
            files = [p for p in sorted(class_dir.iterdir()) if p.is_file()
                     and not p.name.startswith(".")]
            for sub in (p for p in sorted(class_dir.iterdir()) if p.is_dir()):
                dl.exclude(sub, "a folder inside a class folder (only the class folder's own "
                                "files are read)")
            pairs = pair_masks(files, dl, f"class folder {class_dir.name!r}")
            if pairs:
                found.append((splits.get(root), class_dir.name, pairs))
    with_masks = sum(bool(m) for _, _, pairs in found for m in pairs.values())
    seg = with_masks > 0 and label_kind(task) != "class"
    names = sorted({name for _, name, _ in found})
    for split, name, pairs in found:
        for image, masks in pairs.items():
            if seg and not masks:
                dl.exclude(image, "no mask beside it (NAME_mask.*): a segmentation case needs "
                                  "one")
                continue
            if masks and not seg:
                for mask in masks:
                    dl.exclude(mask, f"a mask of {image.name}; a classification run reads the "
                                     "images only")
            cid = f"{name}/{stem(image)}" if split is None else f"{split}/{name}/{stem(image)}"
            case: dict[str, Any] = {"id": cid, "image": str(image.resolve()), "patient_id": cid,
                                    "domain": None, "split": split}
            if seg:
                case.update(label=str(masks[0].resolve()), **{"class": name})
                if len(masks) > 1:
                    case["label_files"] = [str(m.resolve()) for m in masks]
            else:
                case["label"] = names.index(name)
            dl.cases.append(case)
    _describe_splits(dl, splits)
    if seg:
        _as_segmentation(dl, names, with_masks)
        return dl
    if label_kind(task) == "mask":
        raise DataError(f"{str(folder)!r}: class folders without masks beside the images "
                        "(NAME_mask.png) have no segmentation labels; a segmentation run needs "
                        "masks (or an images/ + masks/ folder, or a manifest)")
    if len(names) < 2:
        raise DataError(f"{str(folder)!r}: a class-folder dataset needs at least two sub-folders "
                        f"with images; found {names or 'none'}")
    dl.class_names, dl.class_order = names, "folders"
    return dl


def _as_segmentation(dl: Datalist, names: list[str], with_masks: int) -> None:
    dl.task = "segmentation"
    dl.image_classes = names
    merged = sum(len(c.get("label_files") or ()) > 1 for c in dl.cases)
    dl.notices.append(
        f"masks beside the images (NAME_mask.*, NAME_seg.*, NAME_label.*): read as "
        f"segmentation, {len(dl.cases)} images with masks; each case keeps its folder's class "
        f"({', '.join(names)}) in its 'class' key; a classification run (task: "
        "classification) reads the same folders by class, without the masks")
    if merged:
        dl.notices.append(f"{merged} image{'s' if merged != 1 else ''} with several masks: "
                          "each image's masks are merged by union")
    assume_binary_masks(dl)


def _describe_splits(dl: Datalist, splits: dict[Path, str]) -> None:
    if not splits:
        return
    order = ("train", "val", "test")
    present = sorted(set(splits.values()), key=order.index)
    named = ", ".join(f"{d.name}/" for d in sorted(splits, key=lambda d: order.index(splits[d])))
    dl.split_source = f"the split folders {named}"
    dl.missing_splits = tuple(s for s in ("train", "val", "test") if s not in present)
    dl.notices.append(f"the split folders are the split ({named})"
                      + (f"; no {' or '.join(dl.missing_splits)} folder: a run draws those "
                         "cases from train/ by data.split's fractions" if dl.missing_splits
                         else ""))
    if "train" in dl.missing_splits:
        raise DataError(f"{dl.path!r}: its split folders ({', '.join(d.name for d in splits)}) "
                        "have no training folder (train/); add one, or move the class folders "
                        "out of the split folders")


def read_image_folder(folder: Path, *, task: str | None) -> Datalist:
    """A folder of image files: unlabelled, or segmentation when masks lie beside them."""
    dl = Datalist(folder.name, "images", str(folder), "unlabelled", [])
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    pairs = pair_masks(files, dl, "the folder")
    with_masks = sum(bool(m) for m in pairs.values())
    seg = with_masks > 0 and label_kind(task) != "class"
    for image, masks in pairs.items():
        if seg and not masks:
            dl.exclude(image, "no mask beside it (NAME_mask.*): a segmentation case needs one")
            continue
        case: dict[str, Any] = {"id": stem(image), "image": str(image.resolve()),
                                "label": None, "patient_id": None, "domain": None,
                                "split": None}
        if seg:
            case["label"] = str(masks[0].resolve())
            if len(masks) > 1:
                case["label_files"] = [str(m.resolve()) for m in masks]
        dl.cases.append(case)
    sub = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    for d in sub:
        dl.exclude(d, "a sub-folder of a folder of images (only its own files are read)")
    if seg:
        dl.task = "segmentation"
        merged = sum(len(c.get("label_files") or ()) > 1 for c in dl.cases)
        dl.notices.append(f"masks beside the images: read as segmentation, {len(dl.cases)} "
                          "images with masks" + (f"; {merged} with several masks, merged by "
                                                 "union" if merged else ""))
        assume_binary_masks(dl)
    if not dl.cases:
        raise DataError(f"{str(folder)!r} holds no image files")
    return dl
