"""Data loaders and the task loss for a run."""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, default_collate

from medxfer.config import RunConfig
from medxfer.data.packed_shards import item_shards
from medxfer.errors import ConfigError
from medxfer.tasks import task_of
from medxfer.training import distributed as D
from medxfer.training import shards
from medxfer.training.prefetch import PrefetchLoader


def _generators(loader: Any) -> list[torch.Generator]:
    """The generators a loader draws its order (and worker seeds) from, each once."""
    found: list[torch.Generator] = []
    for owner in (loader, getattr(loader, "sampler", None)):
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def _augmented_dataset(loader: Any) -> Any:
    """The dataset under a loader that holds augmentation streams, or None."""
    dataset = getattr(loader, "dataset", None)
    for _ in range(4):  # RawItems and similar wrappers keep theirs in .dataset
        if dataset is None or hasattr(dataset, "load_random_state_dict"):
            return dataset
        dataset = getattr(dataset, "dataset", None)
    return None


def data_random_state(loaders: Sequence[Any]) -> list[dict[str, Any] | None]:
    """Where each training loader's random streams stand: its shuffle (or sampling)
    generator and its dataset's augmentation streams, so that a resumed run draws the
    batches the uninterrupted run would. Exact with ``data.num_workers: 0``; worker
    processes keep streams of their own that are not saved."""
    states: list[dict[str, Any] | None] = []
    for loader in loaders:
        if loader is None:
            states.append(None)
            continue
        dataset = _augmented_dataset(loader)
        states.append({"generators": [g.get_state() for g in _generators(loader)],
                       "dataset": dataset.random_state_dict() if dataset is not None else None})
    return states


def set_data_random_state(loaders: Sequence[Any], states: Sequence[Any]) -> None:
    """Continue the streams :func:`data_random_state` saved (loaders in the same order)."""
    for loader, state in zip(loaders, states):
        if loader is None or not state:
            continue
        generators = _generators(loader)
        if len(generators) == len(state["generators"]):
            for gen, saved in zip(generators, state["generators"]):
                gen.set_state(saved)
        dataset = _augmented_dataset(loader)
        if dataset is not None and state.get("dataset") is not None:
            dataset.load_random_state_dict(state["dataset"])


def class_weights(labels: list[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights, normalised to mean 1 (absent classes get 0)."""
    counts = Counter(labels)
    weights = torch.tensor([1.0 / counts[c] if counts.get(c) else 0.0
                            for c in range(num_classes)])
    return weights * (num_classes / weights.sum().clamp_min(1e-12))


def make_loader(dataset: Any, config: RunConfig, *, train: bool,
                labels: list[int] | None = None,
                device: torch.device | None = None) -> DataLoader:
    """A data loader for one split.

    Training loaders shuffle with a generator seeded by ``train.seed`` (or draw a
    class-balanced sample when ``train.imbalance: balanced_sampler``) and drop a last
    batch of one item (batch norm cannot train on it).

    In a distributed run (:mod:`medxfer.training.distributed`) a training loader reads this
    rank's share of each epoch with ``train.batch_size / world_size`` items per batch, and
    an evaluation loader reads this rank's unpadded shard (its outputs are gathered by
    :func:`medxfer.training.evaluate.predict`); see :mod:`medxfer.training.shards`.
    """
    generator = torch.Generator().manual_seed(config.train.seed)
    sampler = None
    shuffle = train
    weights = None
    if train and config.train.imbalance == "balanced_sampler" and labels:
        per_class = class_weights(labels, max(labels) + 1)
        weights = [float(per_class[y]) for y in labels]
        sampler = WeightedRandomSampler(weights, num_samples=len(labels), replacement=True,
                                        generator=generator)
        shuffle = False
    batch_size = config.train.batch_size
    length = len(dataset)
    patches = config.patches_per_case() if train else 1
    if train:  # this rank's share, in whole cases
        batch_size = shards.per_rank_batch_size(batch_size, D.world_size() if D.is_active()
                                                else 1, samples_per_case=patches)
    if D.is_active():
        if train:
            sampler = shards.training_sampler(dataset, seed=config.train.seed, weights=weights)
        else:
            sampler = shards.ShardSampler(len(dataset), D.rank(), D.world_size())
        length = len(sampler)
        shuffle = False
    if train and config.data.shard_order:
        if weights is not None:
            raise ConfigError("data.shard_order and train.imbalance: balanced_sampler both choose "
                              "the training order; set one of them")
        sampler = shards.ShardOrderSampler(
            _packed_item_shards(dataset, config), seed=config.train.seed,
            rank_=D.rank() if D.is_active() else 0,
            world=D.world_size() if D.is_active() else 1)
        length, shuffle = len(sampler), False
    drop_last = train and length > batch_size and length % batch_size == 1
    workers = config.data.num_workers
    collate = task_of(config).collate()
    if train and config.trains_on_patches():
        batch_size //= patches  # cases per batch: each gives ``patches`` patches
        drop_last = False
    on_device = (train and config.data.augment_on == "device" and device is not None
                 and device.type == "cuda" and hasattr(dataset, "augment_device"))
    if on_device:
        # MONAI's fast-training recipe: cached items go to the GPU and are augmented there,
        # in the loader's thread (CUDA tensors cannot cross worker processes).
        if workers:
            raise ConfigError("data.augment_on: device augments on the GPU in the loader's "
                              "thread; set data.num_workers: 0 (or augment_on: cpu)")
        dataset.augment_device = device
    if train and getattr(dataset, "batch_augment", None) is not None:
        # data.augment_on: batch: collate the items as read, then augment and adapt the
        # whole batch; on the GPU when training there and no worker process collates.
        on_device = workers == 0 and device is not None and device.type == "cuda"
        collate = FinishBatch(dataset, collate, device if on_device else None)
        dataset = RawItems(dataset)
    kwargs = {"batch_size": batch_size, "shuffle": shuffle, "sampler": sampler,
              "generator": generator if shuffle else None, "drop_last": drop_last,
              "collate_fn": collate, "num_workers": workers,
              "persistent_workers": workers > 0,
              "pin_memory": device is not None and device.type == "cuda" and not on_device}
    if train and (config.data.loader == "thread" or on_device):
        # A background thread prepares the next batches while the model trains on this
        # one (the same batches, in the same order).
        return PrefetchLoader(dataset, buffer_size=config.data.prefetch, **kwargs)
    return DataLoader(dataset, **kwargs)


def _packed_item_shards(dataset: Any, config: RunConfig) -> list[str]:
    """The shard of each item of a training dataset read from a pack.

    Raises:
        ConfigError: when the data is not packed (``data.shard_order`` needs shards).
    """
    found = item_shards(dataset)
    if found is None:
        raise ConfigError(f"data.shard_order reads the shards of packed data, and "
                          f"{config.data.path or 'the sample data'!s} is not packed: pack it with "
                          "`medxfer data pack DATA --output DIR` and set data.path to DIR, or "
                          "set data.shard_order: false")
    return found


class RawItems(Dataset):
    """The items of a batch-augmented dataset as read, before augmentation and adaptation
    (its ``raw`` method); :class:`FinishBatch` completes them once collated."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        return self.dataset.raw(index)


class FinishBatch:
    """A collate function: ``collate`` the raw items, then the dataset's ``finish_batch``
    (batch augmentation and channel adaptation), on ``device`` when given."""

    def __init__(self, dataset: Any, collate: Any = None,
                 device: torch.device | None = None) -> None:
        self.dataset = dataset
        self.collate = collate
        self.device = device

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        batch = (self.collate or default_collate)(items)
        return self.dataset.finish_batch(batch, self.device)
