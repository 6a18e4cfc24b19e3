"""``images/`` + ``masks/`` (or ``labels/``, ``annotations/`` ...): an image and its mask
share a file stem (any extensions; a mask may add a marker, ``NAME_mask.png``), in the
same relative sub-folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medxfer.data.datalist import Datalist, assume_binary_masks, stem
from medxfer.data.layouts.common import IMAGE_DIRS, MASK_DIRS, image_kind_of
from medxfer.data.masks import image_stem_of_mask, is_mask_name
from medxfer.errors import DataError


def read_images_masks(folder: Path) -> Datalist:
    """Cases of an images + masks folder pair.

    Raises:
        DataError: when the folders are missing, ambiguous (two mask folders) or hold no
            image with a mask.
    """
    dirs = [d for d in sorted(folder.iterdir()) if d.is_dir()]
    image_dirs = [d for d in dirs if d.name.lower() in IMAGE_DIRS]
    mask_dirs = [d for d in dirs if d.name.lower() in MASK_DIRS]
    if len(image_dirs) != 1 or len(mask_dirs) != 1:
        found = ", ".join(f"{d.name}/" for d in image_dirs + mask_dirs) or "none"
        raise DataError(f"{str(folder)!r}: an images + masks dataset needs one image folder "
                        f"({'/, '.join(IMAGE_DIRS)}/) and one mask folder "
                        f"({'/, '.join(MASK_DIRS)}/); found {found}. With several, list the "
                        "pairs in a manifest (manifest.csv: image,mask)")
    images_dir, masks_dir = image_dirs[0], mask_dirs[0]
    dl = Datalist(folder.name, "images_masks", str(folder), "segmentation", [])
    images: dict[tuple[str, str], Path] = {}
    masks: dict[tuple[str, str], list[Path]] = {}
    for path in _files(images_dir, dl):
        key = _key(path, images_dir)
        if is_mask_name(stem(path)):
            masks.setdefault(key, []).append(path)
        else:
            images[key] = path
    for path in _files(masks_dir, dl):
        masks.setdefault(_key(path, masks_dir), []).append(path)
    for key, path in sorted(images.items()):
        found = masks.pop(key, [])
        if not found:
            dl.exclude(path, f"no mask with the stem {stem(path)!r} in {masks_dir.name}/")
            continue
        sub = path.parent.relative_to(images_dir).as_posix()
        case: dict[str, Any] = {"id": stem(path) if sub == "." else f"{sub}/{stem(path)}",
                                "image": str(path.resolve()), "label": str(found[0].resolve()),
                                "patient_id": None, "domain": None, "split": None}
        if len(found) > 1:
            case["label_files"] = [str(m.resolve()) for m in found]
        dl.cases.append(case)
    for key, left in sorted(masks.items()):
        for path in left:
            dl.exclude(path, f"no image with the stem {image_stem_of_mask(stem(path))!r} in "
                             f"{images_dir.name}/")
    if not dl.cases:
        raise DataError(f"{str(folder)!r}: no image in {images_dir.name}/ has a mask in "
                        f"{masks_dir.name}/ with the same file stem (e.g. images/case1.png and "
                        f"{masks_dir.name}/case1.png or case1_mask.png)")
    merged = sum(len(c.get("label_files") or ()) > 1 for c in dl.cases)
    if merged:
        dl.notices.append(f"{merged} image{'s' if merged != 1 else ''} with several masks: "
                          "each image's masks are merged by union")
    assume_binary_masks(dl)
    return dl


def _files(folder: Path, dl: Datalist) -> list[Path]:
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or any(p.startswith(".") for p in
                                     path.relative_to(folder).parts):
            continue
        if image_kind_of(path):
            found.append(path)
        else:
            dl.exclude(path, "not an image file medxfer reads")
    return found


def _key(path: Path, root: Path) -> tuple[str, str]:
    """(relative folder, stem without a mask marker), case-insensitive."""
    name = stem(path)
    if is_mask_name(name):
        name = image_stem_of_mask(name)
    return path.parent.relative_to(root).as_posix().casefold(), name.casefold()
