"""``medxfer data pack``: write a dataset as tar shards and an index (the format of
:mod:`medxfer.data.packed_shards`), read exactly as a run of the same config reads it.

The cases are those a run would train on: the datalist of ``data.path``, split by
``data.split`` (or as the data stores it), limited by ``data.limit`` and checked before
anything is written. Each image and mask is stored as its reader gives it, so a run on the
pack preprocesses it as a run on the source does, and, with the same seed, trains on the
same items in the same order.

The pack is written into ``DIR.partial/`` and renamed to ``DIR`` when complete, so a
folder named ``DIR`` is always a whole pack.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from medxfer.data.cases import read_case
from medxfer.data.masks import case_files
from medxfer.data.packed_shards import (
    INDEX_NAME,
    PACK_FORMAT,
    PACK_VERSION,
    file_sha256,
)
from medxfer.data.layouts import build_datalist
from medxfer.data.run_cases import checked_cases, load_datalist, resolve_data_path
from medxfer.data.scan import WHOLE_FILE_BYTES, content_digest
from medxfer.data.splits import SPLITS
from medxfer.errors import ConfigError, DataError, OutputError
from medxfer.io import atomic_write_text, reported_as_output_error
from medxfer.tasks import task_of

if TYPE_CHECKING:
    from medxfer.config import RunConfig

#: ``--shard-size`` when none is given.
DEFAULT_SHARD_SIZE = "1GB"
_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12,
          "KIB": 2 ** 10, "MIB": 2 ** 20, "GIB": 2 ** 30, "TIB": 2 ** 40}
#: Case keys the index keeps as they are (besides id, image, label and split); a stored
#: ``fold`` is left out: the pack's split is final.
_DROPPED_KEYS = {"id", "image", "label", "split", "image_files", "label_files", "fold"}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``1GB``, ``500MB``, ``64MiB`` or ``1000000``.

    Raises:
        ConfigError: naming ``--shard-size`` for anything else.
    """
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", text.upper())
    size = int(float(found.group(1)) * _UNITS[found.group(2) or ""]) if found else 0
    if size <= 0:
        raise ConfigError(f"--shard-size {text!r} is not a size; write e.g. 1GB, 500MB or "
                          "64MiB")
    return size


def pack_run_config(data: Path, config: Path | None, overrides: list[str]) -> RunConfig:
    """The run config that chooses the cases to pack: ``config`` (or the defaults) with
    ``overrides`` and ``data.path`` set to ``data``; without a config or a ``task`` override
    the task is the one ``data``'s labels show (as ``medxfer data inspect`` tells it).

    Raises:
        ConfigError: for a bad config or override.
        DataError: when the data cannot be read.
    """
    from medxfer.config import load_config

    sets = [*overrides, f"data.path={data}"]
    if config is None and not any(o.split("=", 1)[0].strip() == "task" for o in overrides):
        first = load_config(None, sets)
        task = build_datalist(resolve_data_path(first), format=first.data.format,
                              image_key=first.data.image_key,
                              label_key=first.data.label_key).task
        if task != "unlabelled":
            sets.insert(0, f"task={task}")
    return load_config(config, sets)


@dataclass
class _ShardWriter:
    """The open shard of one split: members are appended until it reaches ``limit``."""

    folder: Path
    split: str
    limit: int
    number: int = -1
    tar: tarfile.TarFile | None = None
    samples: int = 0
    closed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.split}-{self.number:06d}.tar"

    def add(self, key: str, members: list[tuple[str, bytes]]) -> dict[str, list[int]]:
        """Append one sample's members; returns ``{suffix: [offset, size]}`` of each."""
        size = sum(512 + len(data) + 511 for _, data in members)
        if self.tar is None or (self.samples and self.tar.offset + size > self.limit):
            self.close()
            self.number += 1
            self.tar = tarfile.open(self.folder / self.name, "w", format=tarfile.USTAR_FORMAT)
        places = {}
        for suffix, data in members:
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            header = len(info.tobuf(self.tar.format, self.tar.encoding, self.tar.errors))
            places[suffix] = [self.tar.offset + header, len(data)]
            self.tar.addfile(info, io.BytesIO(data))
        self.samples += 1
        return places

    def close(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        path = self.folder / self.name
        self.closed[self.name] = {"split": self.split, "size": path.stat().st_size,
                                  "sha256": file_sha256(path)}
        self.tar, self.samples = None, 0


def pack_dataset(config: RunConfig, output: Path, *, shard_size: int,
                 overwrite: bool = False,
                 progress: Callable[[int], Any] | None = None) -> dict[str, Any]:
    """Write the cases a run of ``config`` would use as a pack in ``output``.

    Args:
        config: The run config whose ``data`` settings (path, format, split, limit,
            classes, keys) and task choose and split the cases.
        output: The pack folder; it must not exist or be empty, unless ``overwrite``.
        shard_size: Bytes a shard may reach before the next one starts (a sample is never
            divided; one larger than this gets a shard of its own).
        overwrite: Replace an existing ``output`` (only once the new pack is complete).
        progress: ``progress(total)`` gives a context manager yielding ``advance()``, called
            per case written (e.g. :func:`medxfer.progress.progress` with a label).

    Returns:
        The index written (``index.json``).

    Raises:
        OutputError: when ``output`` exists and holds files (without ``overwrite``), or
            cannot be written.
        DataError: when the data cannot be read, a run would refuse it, or it is a
            MedMNIST file (already one compact array file).
    """
    output = Path(output).expanduser().absolute()
    _check_output(output, overwrite)
    dl = load_datalist(config)
    if dl.medmnist is not None:
        raise DataError(f"{dl.describe()} is a MedMNIST file: its arrays are already one "
                        "compact file read whole; train on it directly (data.path), there is "
                        "nothing to pack")
    cases = checked_cases(dl, config)
    partial = output.with_name(output.name + ".partial")
    with reported_as_output_error(partial):
        if partial.exists():
            shutil.rmtree(partial)  # what an interrupted pack left
        partial.mkdir(parents=True)
        try:
            index = _write_shards(config, dl, cases, partial, shard_size, progress)
            atomic_write_text(partial / INDEX_NAME, json.dumps(index, indent=1))
        except Exception:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    with reported_as_output_error(output):
        if output.exists():
            old = output.with_name(output.name + ".replaced")
            shutil.rmtree(old, ignore_errors=True)
            output.rename(old)
            partial.rename(output)
            shutil.rmtree(old)
        else:
            partial.rename(output)
    return index


def _check_output(output: Path, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise OutputError(f"--output {str(output)!r} is a file; give a new folder for the pack")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise OutputError(f"--output {str(output)!r} exists and is not empty; give a new "
                          "folder, or add --overwrite to replace it once the new pack is "
                          "complete")


def _write_shards(config: RunConfig, dl: Any, cases: list[dict[str, Any]], folder: Path,
                  shard_size: int, progress: Callable[[int], Any] | None) -> dict[str, Any]:
    masks = task_of(config).labels_are_masks
    writers = {s: _ShardWriter(folder, s, shard_size) for s in SPLITS}
    samples = []
    first_dims = None
    with (progress(len(cases)) if progress else nullcontext()) as advance:
        for number, case in enumerate(cases):
            key = f"{number:09d}"
            image = read_case(case, "image")
            first_dims = first_dims or image.spatial_dims
            label = None if masks else _plain(case["label"])
            meta = {"id": str(case["id"]), "split": case["split"],
                    "label": f"{key}.mask.npy" if masks else label,
                    "source_image": str(case["image"]), "image": _image_meta(image),
                    **_extra(case)}
            members = []
            mask_bytes = b""
            if masks:
                mask = read_case(case, "label")
                meta["source_mask"] = str(case["label"])
                meta["mask"] = _image_meta(mask)
                mask_bytes = _npy(mask.array)
            members.append(("json", json.dumps(meta).encode()))
            members.append(("npy", _npy(image.array)))
            if masks:
                members.append(("mask.npy", mask_bytes))
            places = writers[case["split"]].add(key, members)
            samples.append({
                "key": key, "shard": writers[case["split"]].name, "id": str(case["id"]),
                "split": case["split"], "label": label,
                "extra": _extra(case), "members": places, "digest": _digest(case),
                "header": {"spatial_dims": image.spatial_dims,
                           "channels": int(image.array.shape[0]),
                           "shape": list(image.spatial_shape),
                           "dtype": str(image.meta.get("dtype") or image.array.dtype),
                           "spacing": [round(s, 4) for s in image.spacing]}})
            if advance is not None:
                advance()
    shards: dict[str, Any] = {}
    for writer in writers.values():
        writer.close()
        shards.update(writer.closed)
    return {"format": PACK_FORMAT, "version": PACK_VERSION, "name": dl.name,
            "source": {"path": dl.path, "layout": dl.format},
            "task": config.task, "class_names": list(dl.class_names),
            "class_order": dl.class_order, "spatial_dims": dl.spatial_dims or first_dims,
            "modality": dl.modality,
            "split_counts": {s: sum(x["split"] == s for x in samples) for s in SPLITS},
            "shards": dict(sorted(shards.items())), "samples": samples}


def _plain(label: Any) -> Any:
    return label.item() if isinstance(label, np.generic) else label


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _image_meta(image: Any) -> dict[str, Any]:
    """What a reader gave besides the array: affine, modality, and its JSON-able metadata."""
    return {"affine": np.asarray(image.affine, dtype=np.float64).tolist(),
            "modality": image.modality,
            "meta": {k: v for k, v in image.meta.items() if _json_safe(v)}}


def _extra(case: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in case.items() if k not in _DROPPED_KEYS and _json_safe(v)}


def _json_safe(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def _digest(case: dict[str, Any]) -> str:
    """The content hash the checks before training compare across splits, as
    :func:`medxfer.data.scan.scan_cases` computes it for the source file(s)."""
    files = case_files(case, "image")
    path = Path(files[0])
    if len(files) == 1 and path.is_file() and path.stat().st_size <= WHOLE_FILE_BYTES:
        return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
    return content_digest(files, case.get("series_uid"))
