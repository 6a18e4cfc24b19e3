"""Packed datasets: cases stored in uncompressed tar shards (WebDataset naming) with an
``index.json`` that says where each member starts, so a case is read by one positioned
read of its shard and never by scanning a tar.

A pack folder holds ``index.json`` and, per split, ``SPLIT-000000.tar``,
``SPLIT-000001.tar`` ... Each sample ``KEY`` is the members ``KEY.json`` (the case's id,
label, split, and the image's affine, modality and reader metadata), ``KEY.npy`` (the image
array as read, in its source dtype: not preprocessed, so a run's ``data.preprocess``
applies at training time) and, for segmentation, ``KEY.mask.npy`` (the mask as read).

``medxfer data pack`` writes packs (:mod:`medxfer.data.pack_writer`); the ``packed``
layout (:mod:`medxfer.data.layouts.packed`) reads them into cases whose ``packed`` key
:func:`read_packed_image` resolves.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.data.readers import ImageData
from medxfer.errors import DataError

#: The ``format`` value of a pack's ``index.json``.
PACK_FORMAT = "medxfer-packed-shards"
#: The version of the index and shard layout this code reads and writes.
PACK_VERSION = 1
INDEX_NAME = "index.json"
#: Case key holding where a packed case's members are (see :func:`read_packed_image`).
PACKED_KEY = "packed"

# Open shard descriptors of this process: a data-loader worker opens its own (a forked
# worker must not share the parent's, and nothing holding them is pickled).
_HANDLES: dict[str, int] = {}
_HANDLES_PID = os.getpid()
_HANDLES_LOCK = threading.Lock()


def is_pack(folder: Path) -> bool:
    """Whether ``folder`` holds the ``index.json`` of a pack (any version)."""
    index = folder / INDEX_NAME
    if not index.is_file():
        return False
    try:
        with open(index, "rb") as handle:
            head = handle.read(256)
    except OSError:
        return False
    return PACK_FORMAT.encode() in head


def load_index(folder: Path) -> dict[str, Any]:
    """The index of the pack in ``folder``, after checking that every shard it lists exists
    with the size the index records (no shard is read or hashed: see :func:`verify_pack`).

    Raises:
        DataError: naming the index or the shard, for an unreadable index, another version,
            or a missing or truncated shard.
    """
    path = folder / INDEX_NAME
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{str(path)!r} cannot be read as a pack index ({exc}); pack the "
                        "dataset again with `medxfer data pack`") from None
    if not isinstance(index, dict) or index.get("format") != PACK_FORMAT:
        raise DataError(f"{str(path)!r} is not the index of a medxfer pack (no format "
                        f"{PACK_FORMAT!r})")
    if index.get("version") != PACK_VERSION:
        raise DataError(f"{str(path)!r} is a pack of version {index.get('version')!r}; this "
                        f"medxfer reads version {PACK_VERSION}: pack the dataset again with "
                        "this version's `medxfer data pack`")
    for name, shard in index["shards"].items():
        check_shard_size(folder / name, int(shard["size"]))
    return index


def check_shard_size(path: Path, size: int) -> None:
    """Raise :class:`DataError` naming the shard when it is missing or not ``size`` bytes."""
    try:
        have = path.stat().st_size
    except OSError:
        raise DataError(f"shard {str(path)!r} of the pack is missing; copy the whole pack "
                        "folder again, or pack the dataset again with `medxfer data pack`"
                        ) from None
    if have != size:
        raise DataError(f"shard {str(path)!r} of the pack has {have} bytes but its index "
                        f"records {size} (truncated or replaced); copy the whole pack folder "
                        "again, or pack the dataset again with `medxfer data pack`")


def _descriptor(path: str) -> int:
    global _HANDLES_PID
    with _HANDLES_LOCK:
        if _HANDLES_PID != os.getpid():  # a forked worker: its own descriptors
            _HANDLES.clear()
            _HANDLES_PID = os.getpid()
        fd = _HANDLES.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            except OSError as exc:
                raise DataError(f"shard {path!r} of the pack cannot be opened ({exc.strerror}); "
                                "copy the whole pack folder again") from None
            _HANDLES[path] = fd
        return fd


def read_member(shard: str, offset: int, size: int, name: str) -> bytes:
    """``size`` bytes of member ``name`` at ``offset`` in ``shard`` (one positioned read).

    Raises:
        DataError: naming the shard and the member when the shard ends before it.
    """
    fd = _descriptor(shard)
    if hasattr(os, "pread"):
        data = os.pread(fd, size, offset)
    else:  # pragma: no cover - platforms without pread
        with _HANDLES_LOCK:
            os.lseek(fd, offset, os.SEEK_SET)
            data = os.read(fd, size)
    if len(data) != size:
        raise DataError(f"shard {shard!r} of the pack ends inside member {name!r} (truncated); "
                        "copy the whole pack folder again, or pack the dataset again")
    return data


def _member(case: dict[str, Any], suffix: str) -> bytes:
    packed = case[PACKED_KEY]
    offset, size = packed["members"][suffix]
    return read_member(packed["shard"], int(offset), int(size), f"{packed['key']}.{suffix}")


def decode_array(data: bytes, where: str) -> np.ndarray:
    """The array of a ``.npy`` member.

    Raises:
        DataError: naming ``where`` when the bytes are not an ``.npy`` array.
    """
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{where} is not a readable array ({exc}); the pack is damaged: pack "
                        "the dataset again") from None


def read_packed_image(case: dict[str, Any], key: str = "image") -> ImageData:
    """The image (``key`` ``image``) or mask (``label``) of a packed case, as the source's
    reader gave it (array, affine, modality, metadata).

    Raises:
        DataError: naming the shard, when it is missing, truncated or damaged.
    """
    meta = json.loads(_member(case, "json"))
    suffix = "mask.npy" if key == "label" else "npy"
    where = str(case[key])
    array = decode_array(_member(case, suffix), where)
    part = meta["mask" if key == "label" else "image"]
    return ImageData(array, np.asarray(part["affine"], dtype=np.float64), where,
                     modality=part.get("modality"), meta=dict(part.get("meta") or {}))


def item_shards(dataset: Any) -> list[str] | None:
    """The shard of each item of a run's dataset of packed cases, or ``None`` when its
    items are not packed cases.

    ``dataset`` is a :class:`medxfer.data.datasets.CaseDataset` (its ``base``) or a base
    dataset: a MONAI dataset of case dicts (its ``data``), or the 2D slices of one
    (:class:`medxfer.data.datasets.SliceCases`: its ``index`` of (case, slice) pairs).
    """
    base = getattr(dataset, "base", dataset)
    slices = getattr(base, "index", None) if hasattr(base, "axis") else None
    if slices is not None:
        base = base.base
    cases = getattr(base, "data", None)
    if not isinstance(cases, list) or not cases or \
            not all(isinstance(c, dict) and PACKED_KEY in c for c in cases):
        return None
    shards = [c[PACKED_KEY]["shard"] for c in cases]
    return [shards[case] for case, _ in slices] if slices is not None else shards


def verify_pack(folder: Path) -> list[str]:
    """Check a pack fully: every shard's size and SHA-256 against the index, and every
    sample's members inside its shard.

    Returns:
        One line per problem (empty when the pack is intact).

    Raises:
        DataError: when the index itself cannot be read.
    """
    path = folder / INDEX_NAME
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{str(path)!r} cannot be read as a pack index ({exc})") from None
    problems = []
    for name, shard in index["shards"].items():
        try:
            check_shard_size(folder / name, int(shard["size"]))
        except DataError as exc:
            problems.append(str(exc))
            continue
        if file_sha256(folder / name) != shard["sha256"]:
            problems.append(f"shard {str(folder / name)!r} does not match the SHA-256 its "
                            "index records (damaged or changed)")
    for sample in index["samples"]:
        size = int(index["shards"].get(sample["shard"], {}).get("size", 0))
        for suffix, (offset, length) in sample["members"].items():
            if offset + length > size:
                problems.append(f"member {sample['key']}.{suffix} lies outside shard "
                                f"{sample['shard']!r}")
    return problems


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
