"""``data.cache: auto``: preprocessed cases in memory up to a budget, the rest on disk.

A run caches the output of the deterministic preprocessing chain so that every epoch
does not read and resample the files again. ``memory`` keeps every case, ``disk`` writes
every case under the run folder; ``auto`` (the default) keeps cases in memory, in split
order (train, then validation, then test), until the budget ``data.cache_memory`` is
spent, and caches the others on disk (MONAI ``PersistentDataset``), or reads them from
their files each time when there is no cache folder or no room on its disk.

Cases are stored compactly when that is lossless: an image whose values are whole numbers
that fit uint8 or int16, or 8-bit values scaled by 1/255 (what ``intensity: uint8`` gives),
is kept as uint8/int16 and turned back into the identical float32 tensor when it is read;
masks are kept as uint8. Anything else (resampled, resized or z-scored images) stays
float32. The cache fills in several worker processes, with a progress line and an ETA.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from medxfer.errors import MedxferError, unwrap_errors
from medxfer.memory_size import (
    DEFAULT_MEMORY_SHARE,
    available_memory,
    format_bytes,
    parse_memory,
)
from medxfer.progress import announced, reporting_enabled, write_line

#: Below this many cases the cache fills in the calling process (workers cost a start-up).
PARALLEL_FILL_MIN = 64
#: Most worker processes filling a cache.
MAX_FILL_WORKERS = 8
#: Disk space left free when cases spill to disk.
DISK_RESERVE = 1 << 30

@dataclass
class CacheBudget:
    """Bytes the memory cache of one run may hold, shared by its splits in the order
    they fill (train, validation, test).

    Args:
        total: The budget in bytes.
        source: How it was set, for the run's log (``50% of 21 GB available``).
    """

    total: int
    source: str
    used: int = 0
    lines: list[str] = field(default_factory=list)
    #: ``(cases kept, cases, bytes kept, storage)`` of each split filled so far.
    splits: list[tuple[int, int, int, str]] = field(default_factory=list)

    @classmethod
    def from_setting(cls, setting: str | float | None, processes: int = 1) -> CacheBudget:
        """The budget for ``data.cache_memory`` (None: :data:`DEFAULT_MEMORY_SHARE` of the
        available memory), split evenly between ``processes`` on this machine (each rank
        of a distributed run caches its own copy)."""
        value = parse_memory(DEFAULT_MEMORY_SHARE if setting is None else setting)
        if isinstance(value, float):
            available = available_memory()
            total = int(value * available)
            source = f"{value:.0%} of {format_bytes(available)} available"
        else:
            total, source = value, f"data.cache_memory {format_bytes(value)}"
        if processes > 1:
            total //= processes
            source += f", shared by {processes} processes"
        return cls(total=total, source=source)

    @property
    def left(self) -> int:
        """Bytes not yet taken."""
        return max(self.total - self.used, 0)


# -- lossless compaction ------------------------------------------------------------------

#: The key of a compacted case dict that says how each compact tensor goes back (plain
#: strings, so a disk cache loads with ``weights_only``).
COMPACT_KEY = "_compact"
#: How a compact tensor becomes the original again.
_EXPANSIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "float32": lambda t: t.float(),
    "div255": lambda t: t.float() / 255.0,
    "int64": lambda t: t.long(),
    "int32": lambda t: t.int(),
}


def compact_tensor(tensor: Any) -> tuple[Any, str | None]:
    """``(smaller tensor, expansion)`` when ``tensor`` fits uint8 or int16 with nothing
    lost (checked bit for bit), else ``(tensor, None)``."""
    if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0 or tensor.ndim == 0:
        return tensor, None
    if type(tensor) is not torch.Tensor:
        tensor = tensor.as_subclass(torch.Tensor)
    if tensor.dtype in (torch.int64, torch.int32):
        lo, hi = int(tensor.min()), int(tensor.max())
        for small in (torch.uint8, torch.int16):
            info = torch.iinfo(small)
            if info.min <= lo and hi <= info.max:
                return tensor.to(small), str(tensor.dtype).removeprefix("torch.")
        return tensor, None
    if tensor.dtype != torch.float32 or not bool(torch.isfinite(tensor).all()):
        return tensor, None
    lo, hi = float(tensor.min()), float(tensor.max())
    if bool((tensor == tensor.round()).all()):
        for small in (torch.uint8, torch.int16):
            info = torch.iinfo(small)
            if info.min <= lo and hi <= info.max:
                return tensor.to(small), "float32"
    if 0.0 <= lo and hi <= 1.0:
        quantised = (tensor * 255.0).round().to(torch.uint8)
        if torch.equal(_EXPANSIONS["div255"](quantised), tensor):
            return quantised, "div255"
    return tensor, None


def compact_item(item: dict[str, Any]) -> dict[str, Any]:
    """A case dict with its image and mask tensors compacted where that is lossless."""
    out, how = dict(item), {}
    for key in ("image", "label"):
        if key in out:
            out[key], expansion = compact_tensor(out[key])
            if expansion is not None:
                how[key] = expansion
    if how:
        out[COMPACT_KEY] = how
    return out


def expand_item(item: dict[str, Any]) -> dict[str, Any]:
    """The case dict :func:`compact_item` was given (bit for bit)."""
    if COMPACT_KEY not in item:
        return item
    out = dict(item)
    for key, expansion in out.pop(COMPACT_KEY).items():
        out[key] = _EXPANSIONS[expansion](out[key])
    return out


def item_nbytes(item: dict[str, Any]) -> int:
    """Bytes the tensors of a (compacted) case dict hold."""
    return sum(v.numel() * v.element_size() for v in item.values()
               if isinstance(v, torch.Tensor))


def storage_kinds(items: list[dict[str, Any]]) -> str:
    """How the images of ``items`` are stored: ``uint8 (lossless)``, ``float32``, ..."""
    kinds = set()
    for item in items:
        image = item.get("image")
        if isinstance(image, torch.Tensor):
            kind = str(image.dtype).removeprefix("torch.")
            kinds.add(f"{kind} (lossless)" if "image" in item.get(COMPACT_KEY, {}) else kind)
    return " and ".join(sorted(kinds)) or "-"


class CompactStep:
    """:func:`compact_item` as a MONAI transform (registered as a deterministic
    ``monai.transforms.Transform`` by :func:`compacting_chain`)."""

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        return compact_item(dict(data))


def compacting_chain(transform: Any) -> Any:
    """The preprocessing chain (a MONAI ``Compose``) followed by :class:`CompactStep`, one
    flat ``Compose`` of deterministic transforms, so that MONAI's ``PersistentDataset``
    caches its output (what the disk spill of ``auto`` stores)."""
    from monai.transforms import Compose, Transform

    Transform.register(CompactStep)
    steps = list(transform.transforms) if isinstance(transform, Compose) else [transform]
    return Compose([*steps, CompactStep()])


# -- the dataset ----------------------------------------------------------------------------

class _Preprocessed(Dataset):
    """``transform(cases[i])`` compacted, or the error it raised (so that a worker never
    wraps a user error in its own traceback)."""

    def __init__(self, cases: list[dict[str, Any]], transform: Any, indices: list[int]) -> None:
        self.cases, self.transform, self.indices = cases, transform, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        index = self.indices[i]
        try:
            return index, compact_item(dict(self.transform(dict(self.cases[index]))))
        except Exception as exc:  # noqa: BLE001 - re-raised by the filling process
            error = unwrap_errors(exc)
            if not isinstance(error, MedxferError):
                error = RuntimeError(f"preprocessing {self.cases[index].get('image')!r} "
                                     f"failed: {type(error).__name__}: {error}")
            return index, error


def local_processes() -> int:
    """Processes of this run on this machine (``LOCAL_WORLD_SIZE`` of torchrun, else 1)."""
    try:
        return max(int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), 1)
    except ValueError:
        return 1


def fill_workers(n_cases: int) -> int:
    """Worker processes that fill a cache of ``n_cases`` (0: the calling process)."""
    if n_cases < PARALLEL_FILL_MIN:
        return 0
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    share = cores // local_processes()
    return min(share, MAX_FILL_WORKERS) if share > 1 else 0


def _preprocessed(cases: list[dict[str, Any]], transform: Any,
                  indices: list[int]) -> Iterator[tuple[int, Any]]:
    """``(index, compacted case or error)`` for ``indices``, in order, filled by
    :func:`fill_workers` processes."""
    dataset = _Preprocessed(cases, transform, indices)
    workers = fill_workers(len(indices))
    if workers == 0:
        yield from (dataset[i] for i in range(len(dataset)))
        return
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers,
                        collate_fn=lambda x: x, prefetch_factor=4, persistent_workers=False)
    for index, item in loader:
        yield index, item if isinstance(item, BaseException) else _owned(item)


def _owned(item: dict[str, Any]) -> dict[str, Any]:
    """A worker's case with its tensors copied into this process's own memory: a tensor
    from a worker lives in shared memory and holds a file descriptor open while it is
    kept, and a cache of 100k cases would run out of them (``Too many open files``)."""
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in item.items()}


class BudgetCache(Dataset):
    """Preprocessed cases: the first ones in memory (compact) while ``budget`` lasts, the
    others from ``spill`` (a disk cache, or the chain run again each time).

    Args:
        cases: Case dicts.
        transform: The deterministic preprocessing chain.
        budget: The run's memory budget, shared by its splits (taken from as cases are
            kept).
        spill: ``spill(cases, bytes_per_case) -> Dataset`` for the cases that do not fit
            (see :func:`disk_spill`).
        label: The split's name, for the progress line and the summary.

    Raises:
        MedxferError: the first user error a case raised while the cache filled.
    """

    def __init__(self, cases: list[dict[str, Any]], transform: Any, *, budget: CacheBudget,
                 spill: Callable[[list[dict[str, Any]], int], Dataset],
                 label: str = "cases") -> None:
        self.cases = self.data = cases  # data: the case list, named as MONAI's datasets do
        self.memory: list[dict[str, Any]] = []
        self.rest: Dataset | None = None
        kept = last_size = 0
        tic = time.perf_counter()
        with announced(f"caching {len(cases)} {label} cases", len(cases)) as advance:
            stream = _preprocessed(cases, transform, list(range(len(cases))))
            for _, item in stream:
                if isinstance(item, BaseException):
                    raise item
                last_size = item_nbytes(item)
                if last_size > budget.left:
                    break
                budget.used += last_size
                kept += last_size
                self.memory.append(item)
                advance()
            del stream  # stops the filling workers when the budget ran out
        if len(self.memory) < len(cases):
            per_case = kept // len(self.memory) if self.memory else last_size
            self.rest = spill(cases[len(self.memory):], per_case)
        self.summary = self._describe(label, kept, time.perf_counter() - tic)
        budget.lines.append(self.summary)
        budget.splits.append((len(self.memory), len(cases), kept,
                              storage_kinds(self.memory[:50])))

    def _describe(self, label: str, kept: int, seconds: float) -> str:
        n, k = len(self.cases), len(self.memory)
        text = f"{label} {k} of {n} cases in memory ({format_bytes(kept)}"
        text += f", {storage_kinds(self.memory[:50])}" if self.memory else ""
        text += f", {seconds:.0f} s)"
        if self.rest is not None:
            where = getattr(self.rest, "describe", "read from their files each time")
            text += f", the memory budget ran out: the other {n - k} are {where}"
        return text

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self.cases)
        if index < len(self.memory):
            return expand_item(self.memory[index])
        if self.rest is None:
            raise IndexError(index)
        return expand_item(self.rest[index - len(self.memory)])


def disk_spill(transform: Any, folder: Path | None) -> Callable[[list[dict[str, Any]], int],
                                                                   Dataset]:
    """The ``spill`` of :class:`BudgetCache`: a compact disk cache in ``folder`` (MONAI's
    ``PersistentDataset``, filled as the cases are first read) when there is a folder and
    its disk has room for the cases (:data:`DISK_RESERVE` kept free), else the chain run
    again each time a case is read."""

    def make(cases: list[dict[str, Any]], per_case: int) -> Dataset:
        from monai.data import Dataset as MonaiDataset
        from monai.data import PersistentDataset

        chain = compacting_chain(transform)
        need = per_case * len(cases)
        if folder is None:
            why = "no cache folder"
        else:
            folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(folder).free
            if need + DISK_RESERVE <= free:
                data = PersistentDataset(cases, chain, cache_dir=folder)
                data.describe = f"cached on disk as they are first read (about " \
                                f"{format_bytes(need)}, {folder})"
                return data
            why = f"a disk cache needs about {format_bytes(need)}; {folder} has " \
                  f"{format_bytes(free)} free"
        plain = MonaiDataset(cases, chain)
        plain.describe = f"preprocessed again each time they are read ({why})"
        return plain

    return make


def report(budget: CacheBudget) -> None:
    """Say how the run's cache was filled (inside ``reporting``: ``medxfer run``)."""
    if not (reporting_enabled() and budget.lines):
        return
    head = f"data cache (auto; budget {format_bytes(budget.total)}, {budget.source})"
    if all(kept == n for kept, n, _, _ in budget.splits):
        kinds = sorted({kind for _, n, _, kind in budget.splits if n})
        write_line(f"{head}: every case in memory, "
                   f"{format_bytes(sum(b for _, _, b, _ in budget.splits))} as "
                   f"{' and '.join(kinds) or '-'}")
    else:
        write_line(f"{head}: " + "; ".join(budget.lines))
