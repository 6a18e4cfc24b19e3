"""Datasets the trainer iterates: cached preprocessing, then seeded augmentation.

Two stages: a *base* dataset yields preprocessed case dicts (file cases through the MONAI
chain of :mod:`medxfer.data.transforms`, cached by ``data.cache``; MedMNIST arrays kept
in memory and resized per item), and :class:`CaseDataset` applies augmentation (training
only), channel adaptation and returns trainer items ``{"image", "label", "id"}``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from medxfer.data.augment import CachedFgBgIndices
from medxfer.data.cache import BudgetCache, CacheBudget, disk_spill
from medxfer.data.transforms import AdaptChannels, normalise_intensity, resize_tensor
from medxfer.errors import ConfigError, unwrap_errors
from medxfer.progress import announced
from medxfer.rng import pack_numpy_state, unpack_numpy_state
from medxfer.tasks import label_kind


class ArrayCases(Dataset):
    """In-memory images (e.g. MedMNIST uint8) preprocessed per item, cheaply.

    Args:
        images: ``[N, C, *spatial]`` array.
        labels: ``[N]`` labels.
        ids: Case ids.
        intensity: Concrete intensity mode (``uint8`` scales by 1/255).
        image_size: Resize target, or None.
        ct_window: Window for ``ct_window``.
        percentiles: Percentiles for ``percentile``.
    """

    def __init__(self, images: np.ndarray, labels: list[Any], ids: list[str], *, intensity: str,
                 image_size: list[int] | None, ct_window: list[float],
                 percentiles: list[float]) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = list(labels)
        self.ids = list(ids)
        self.intensity = intensity
        self.image_size = image_size
        self.ct_window = ct_window
        self.percentiles = percentiles

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = normalise_intensity(self.images[index], self.intensity,
                                    ct_window=self.ct_window, percentiles=self.percentiles)
        return {"image": resize_tensor(image, self.image_size), "label": self.labels[index],
                "id": self.ids[index]}


def cached_dataset(cases: list[dict[str, Any]], transform: Any, *, cache: str,
                   cache_dir: Path | None, key: dict[str, Any],
                   budget: CacheBudget | None = None, label: str = "cases") -> Dataset:
    """A dataset over ``cases`` with ``transform``: plain, cached in memory or on disk, or
    both within a memory budget.

    Args:
        cases: Case dicts.
        transform: Deterministic transform (its output is what gets cached).
        cache: ``auto`` (:class:`medxfer.data.cache.BudgetCache`), ``none``, ``memory``
            (``CacheDataset``) or ``disk`` (``PersistentDataset``).
        cache_dir: Folder of the disk cache (under the run folder).
        key: Settings the cached output depends on; they name the cache sub-folder so that
            changed preprocessing never reuses stale files.
        budget: ``auto``'s memory budget, shared by the splits of a run (default: the
            default budget for this split alone).
        label: The split's name, for progress lines.

    Raises:
        ConfigError: for ``disk`` without a cache folder.
    """
    from monai.data import Dataset as MonaiDataset
    from monai.data import PersistentDataset

    if cache == "auto":
        folder = None if cache_dir is None else _cache_folder(cache_dir, {**key, "compact": 1})
        return BudgetCache(cases, transform, budget=budget or CacheBudget.from_setting(None),
                           spill=disk_spill(transform, folder), label=label)
    if cache == "memory":
        try:
            with announced(f"caching {len(cases)} cases", len(cases)) as advance:
                return _counted(_fail_fast_cache_class(), advance)(
                    cases, transform, cache_rate=1.0, num_workers=1, progress=False,
                    copy_cache=False)
        except RuntimeError as exc:
            raise unwrap_errors(exc) from None
    if cache == "disk":
        if cache_dir is None:
            raise ConfigError("data.cache: disk needs a cache folder (the run folder's cache/); "
                              "use memory or none here")
        folder = _cache_folder(cache_dir, key)
        folder.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(cases, transform, cache_dir=folder)
    return MonaiDataset(cases, transform)


def _cache_folder(cache_dir: Path, key: dict[str, Any]) -> Path:
    """The disk cache's sub-folder for preprocessing settings ``key``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode())
    return Path(cache_dir) / f"preprocessed-{digest.hexdigest()[:12]}"


@functools.cache
def _fail_fast_cache_class() -> type:
    """The memory cache's dataset class (defined on first use: MONAI is imported lazily)."""
    from monai.data import CacheDataset

    class FailFastCache(CacheDataset):
        """MONAI's ``CacheDataset``, whose filling threads never raise.

        ``CacheDataset`` fills its cache in a thread pool. When a case raised there, the
        error left ``imap`` at once while the pool thread went on preprocessing the next
        cases; the process then ended with that thread inside native code (ITK, zlib,
        torch) and aborted (``terminate called without an active exception``, exit 134)
        after the message. Here a failing case is recorded, the remaining cases are
        skipped, the pool finishes, and the first error is raised from the calling
        thread.
        """

        _failure: BaseException | None = None

        def _fill_cache(self, indices: Any = None) -> list:
            self._failure = None
            items = super()._fill_cache(indices)
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure
            return items

        def _load_cache_item(self, idx: int) -> Any:
            if self._failure is not None:
                return None
            try:
                return super()._load_cache_item(idx)
            except Exception as exc:  # noqa: BLE001 - re-raised by _fill_cache
                self._failure = self._failure or unwrap_errors(exc)
                return None

    return FailFastCache


def _counted(cache_class: type, advance: Callable[[], None]) -> type:
    """``cache_class`` (MONAI's CacheDataset) calling ``advance()`` per case it caches, so a
    run reports the progress of a slow cache (:func:`medxfer.progress.announced`)."""

    class Counted(cache_class):  # type: ignore[misc, valid-type]
        def _load_cache_item(self, idx: int) -> Any:
            item = super()._load_cache_item(idx)
            advance()
            return item

    return Counted


class SliceCases(Dataset):
    """The 2D slices of preprocessed 3D cases along one axis, as cases of their own.

    Slices of different volumes may differ in size; train on patches
    (``data.patch.size``) or give the volumes one size (``crop_size``/``image_size``).

    Args:
        base: Yields ``{"image": [C, X, Y, Z], "label": [1, X, Y, Z], "id"}``.
        axis: Spatial axis to slice along (0, 1 or 2).
    """

    def __init__(self, base: Dataset, *, axis: int) -> None:
        self.base = base
        self.axis = int(axis)
        self.index: list[tuple[int, int]] = []
        for case in range(len(base)):  # type: ignore[arg-type]
            depth = int(base[case]["image"].shape[1 + self.axis])
            self.index += [(case, k) for k in range(depth)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case, k = self.index[index]
        item = self.base[case]
        dim = 1 + self.axis
        return {"image": item["image"].select(dim, k), "label": item["label"].select(dim, k),
                "id": f"{item['id']}#{k}"}


def _random_states(root: Any) -> list[np.random.RandomState]:
    """The random states of every randomised MONAI transform in ``root`` (a transform, a
    ``Compose`` or a list), nested ones included, in a fixed order and each once."""
    from monai.transforms import Transform

    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def walk(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item)
            return
        if not isinstance(obj, Transform):
            return
        state = getattr(obj, "R", None)
        if isinstance(state, np.random.RandomState) and id(state) not in seen:
            seen.add(id(state))
            found.append(state)
        for value in vars(obj).values():
            if isinstance(value, (Transform, list, tuple)):
                walk(value)

    if root is not None:
        walk(root)
    return found


class CaseDataset(Dataset):
    """Trainer-facing items from a base dataset: augmentation, channels, label types.

    Random transforms are seeded from ``seed`` in the main process; in a data-loader
    worker from ``seed`` and the worker's own seed (which the loader's generator fixes),
    so every worker draws a different, reproducible stream.

    Args:
        base: Yields dicts with ``image`` ``[C, *spatial]``, ``label`` and ``id``.
        task: ``classification``, ``regression`` or ``segmentation``.
        adapt: Channel handling and ImageNet normalisation, applied last.
        augment: Seeded random transforms (training only), or None.
        seed: The training seed.

        batch_augment: Random transforms of whole batches (``data.augment_on: batch``,
            a :class:`medxfer.data.batch_augment.BatchAugmentation`), or None. A loader
            then reads :meth:`raw` items and finishes each collated batch with
            :meth:`finish_batch`; indexing the dataset directly gives items without them.

    Attributes:
        augment_device: When set (``data.augment_on: device``), each item is moved to this
            device before augmentation, so the random transforms run there.
    """

    def __init__(self, base: Dataset, *, task: str, adapt: AdaptChannels,
                 augment: Any | None = None, seed: int = 0,
                 batch_augment: Any | None = None) -> None:
        self.base = base
        self.task = task
        self.label_kind = label_kind(task)
        self.adapt = adapt
        # raw items (a batch-augmented run) get their channels before they are collated,
        # so grey and colour images batch together under channels rgb or grey
        self._raw_channels = AdaptChannels(adapt.channels) \
            if adapt.channels in ("rgb", "grey") else None
        self.augment = augment
        self.batch_augment = batch_augment
        self.seed = seed
        self._seeded_for: int | None = None
        self.augment_device: torch.device | None = None
        # patch draws that keep each item's fg/bg indices need to know which item it is
        self._names_items = any(isinstance(t, CachedFgBgIndices)
                                for t in getattr(augment, "transforms", ()))

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def _ensure_seeded(self) -> None:
        info = get_worker_info()
        worker = -1 if info is None else info.id
        if self._seeded_for == worker:
            return
        # Once per process (a loader worker too): a background-only case (e.g. a slice
        # outside the organ) is valid, its patches are then all background, and MONAI warns
        # about that at every draw. A filter for the process, not a catch_warnings around
        # each draw: that reset every "once per line" warning registry at every item, so
        # warnings meant to show once (torch's) showed at every training step.
        warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
        seed = self.seed if info is None else (self.seed * 1_000_003 + info.seed) % (2 ** 32)
        for augment in (self.augment, self.batch_augment):
            if augment is not None:
                augment.set_random_state(seed=seed % (2 ** 32))
        self._seeded_for = worker

    def random_state_dict(self) -> dict[str, Any]:
        """Where this process's augmentation streams stand: the per-item transforms' and
        the batch augmentation's (a data-loader worker's own streams are not included)."""
        self._ensure_seeded()
        return {"items": [pack_numpy_state(r.get_state()) for r in _random_states(self.augment)],
                "batch": (self.batch_augment.random_state_dict()
                          if self.batch_augment is not None else None)}

    def load_random_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the streams :meth:`random_state_dict` saved (same augmentation)."""
        self._ensure_seeded()  # so that the first item does not reseed them
        streams = _random_states(self.augment)
        if len(streams) != len(state.get("items", [])):
            return  # another augmentation chain: its own seeding stands
        for stream, saved in zip(streams, state["items"]):
            stream.set_state(unpack_numpy_state(saved))
        if self.batch_augment is not None and state.get("batch") is not None:
            self.batch_augment.load_random_state_dict(state["batch"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._item(index, finish=True)

    def raw(self, index: int) -> dict[str, Any]:
        """Item ``index`` before ImageNet normalisation: float ``image`` ``[C, *spatial]``
        (with the channels ``data.preprocess.channels`` asks for, so that grey and colour
        images collate), its ``label`` and ``id``, with only the per-item transforms applied
        (in a batch-augmented run: the random patch draw). Collate these and pass the batch
        to :meth:`finish_batch`."""
        return self._item(index, finish=False)

    def finish_batch(self, batch: dict[str, Any],
                     device: torch.device | None = None) -> dict[str, Any]:
        """Augment a collated batch of :meth:`raw` items with ``batch_augment`` (on
        ``device`` when given, else where the batch is) and adapt its channels, giving what
        :meth:`__getitem__` gives, batched."""
        image = batch["image"]
        label = batch.get("label") if self.label_kind == "mask" else None
        if device is not None:
            image = image.to(device, non_blocking=True)
            label = label.to(device, non_blocking=True) if label is not None else None
        if self.batch_augment is not None:
            self._ensure_seeded()
            image, label = self.batch_augment(image, label)
        out = dict(batch)
        out["image"] = self.adapt(image.float(), channel_dim=1)
        if label is not None:
            out["label"] = label
        return out

    def _item(self, index: int, *, finish: bool) -> dict[str, Any]:
        try:
            item = self.base[index]
        except RuntimeError as exc:
            raise unwrap_errors(exc) from None
        data = {"image": item["image"]}
        if self.label_kind == "mask":
            data["label"] = item["label"]
        if self.augment_device is not None:
            data = {k: torch.as_tensor(v).to(self.augment_device, non_blocking=True)
                    for k, v in data.items()}
        if self._names_items:
            data[CachedFgBgIndices.KEY] = index  # patch draws reuse this item's fg/bg indices
        if self.augment is not None:
            from monai.data import get_track_meta, set_track_meta

            self._ensure_seeded()
            previous = get_track_meta()
            set_track_meta(False)  # 3x faster: no metadata or inverse bookkeeping needed here
            try:
                with _one_intra_op_thread(_numel(data["image"])):
                    data = self.augment(data)
            finally:
                set_track_meta(previous)
        if isinstance(data, list):  # several random patches of one case
            return [self._finish(d, item, finish) for d in data]  # type: ignore[return-value]
        return self._finish(data, item, finish)

    def _finish(self, data: dict[str, Any], item: dict[str, Any],
                adapt: bool = True) -> dict[str, Any]:
        image = _plain_float(data["image"])
        if not adapt and self._raw_channels is not None:
            image = self._raw_channels(image)
        out = {"image": self.adapt(image) if adapt else image, "id": str(item["id"])}
        if self.label_kind == "mask":
            out["label"] = _plain_float(data["label"]).round().long()
        elif self.label_kind == "value":
            out["label"] = torch.tensor(float(item["label"]), dtype=torch.float32)
        else:
            out["label"] = torch.tensor(int(item["label"]), dtype=torch.long)
        return out


GRAIN_SIZE = 32768  # torch's intra-op parallel grain: smaller tensors are one chunk anyway


def _numel(x: Any) -> int:
    return int(np.prod(getattr(x, "shape", ()) or (0,)))


@contextlib.contextmanager
def _one_intra_op_thread(numel: int) -> Iterator[None]:
    """Augment a small item (under torch's parallel grain size) on one intra-op thread,
    when called from the main thread.

    On small images torch's intra-op threads only contend: on 2 cores a 28x28 MedMNIST item
    took 3.7 ms with two threads and 1.2 ms with one. Below the grain size every op,
    reductions included, computes the same values either way (the training batches are
    bitwise identical; tested), so a run's results do not change. Larger items (3D patches)
    keep every thread. Loader workers already use one thread; a background loader thread is
    left alone (the thread count is process-wide, and the training thread is using it).
    """
    if numel >= GRAIN_SIZE or threading.current_thread() is not threading.main_thread() \
            or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _plain_float(x: Any) -> torch.Tensor:
    from monai.data import MetaTensor

    if isinstance(x, MetaTensor):
        x = x.as_tensor()
    return torch.as_tensor(x).float()
