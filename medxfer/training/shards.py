"""Splitting data between the ranks of a distributed run (see
:mod:`medxfer.training.distributed`).

Training: each rank draws an equal, disjoint share of every epoch (``DistributedSampler``
seeded by ``train.seed``, or :class:`DistributedWeightedSampler` for
``train.imbalance: balanced_sampler``), with ``train.batch_size / world_size`` items per
batch. Evaluation: rank ``r`` of ``W`` takes items ``r, r + W, ...`` (no padding, nothing
dropped) and :func:`gather_in_order` puts every rank's per-item outputs back in dataset
order, on every rank.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler, Subset

from medxfer.errors import ConfigError
from medxfer.training.distributed import all_gather, is_active, rank, world_size

# -- evaluation shards --------------------------------------------------------------------

def shard_indices(n: int, rank_: int, world: int) -> range:
    """The items of a split of ``n`` that rank ``rank_`` of ``world`` evaluates: ``rank_``,
    ``rank_ + world``, ... (unpadded: shards differ in size by at most one)."""
    return range(rank_, n, world)


def merge_shards(parts: Sequence[Sequence[Any]]) -> list[Any]:
    """Undo :func:`shard_indices`: ``parts[r][j]`` is item ``r + j * len(parts)``.

    Raises:
        ValueError: when the shard sizes cannot come from one split.
    """
    world = len(parts)
    total = sum(len(p) for p in parts)
    out: list[Any] = [None] * total
    for r, part in enumerate(parts):
        if len(part) != len(shard_indices(total, r, world)):
            raise ValueError(f"shard {r} has {len(part)} items; a split of {total} over "
                             f"{world} ranks gives it {len(shard_indices(total, r, world))}")
        out[r::world] = list(part)
    return out


def merge_arrays(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Per-item arrays of each rank's shard, merged in dataset order (see
    :func:`merge_shards`); empty shards may have any shape."""
    filled = [p for p in parts if len(p)]
    if not filled:
        return parts[0] if parts else np.zeros(0)
    rows = merge_shards([list(p) for p in parts])
    return np.stack(rows).astype(filled[0].dtype, copy=False)


def gather_in_order(local: Sequence[Any]) -> list[Any]:
    """This rank's per-item results of its shard, merged with every other rank's in
    dataset order (``list(local)`` when not distributed)."""
    if not is_active():
        return list(local)
    return merge_shards(all_gather(list(local)))


def shard_dataset(dataset: Any) -> Any:
    """This rank's unpadded shard of an evaluation dataset (the dataset itself when not
    distributed)."""
    if not is_active():
        return dataset
    return Subset(dataset, list(shard_indices(len(dataset), rank(), world_size())))


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...`` of a dataset of ``n``: one rank's evaluation
    shard, without the padding of ``DistributedSampler``. Loaders that use it produce
    outputs that :func:`gather_in_order` puts back together."""

    def __init__(self, n: int, rank_: int, world: int) -> None:
        self.indices = shard_indices(n, rank_, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def is_sharded(loader: Any) -> bool:
    """Whether ``loader`` reads one rank's evaluation shard (its outputs must be gathered)."""
    return isinstance(getattr(loader, "sampler", None), ShardSampler)


# -- training samplers --------------------------------------------------------------------

class DistributedWeightedSampler(Sampler[int]):
    """A class-balanced sample with replacement, split between ranks.

    Each epoch every rank draws the same ``ceil(n / world) * world`` indices with
    probabilities ``weights`` from a generator seeded by ``seed + epoch`` and keeps every
    ``world``-th one from its rank on, so the ranks see disjoint parts of one sample.
    """

    def __init__(self, weights: Sequence[float], *, rank_: int, world: int, seed: int) -> None:
        self.weights = torch.as_tensor(list(weights), dtype=torch.double)
        self.rank, self.world, self.seed, self.epoch = rank_, world, seed, 0
        self.per_rank = math.ceil(len(self.weights) / world)

    def set_epoch(self, epoch: int) -> None:
        """Draw the sample of ``epoch`` next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, self.per_rank * self.world, replacement=True,
                                  generator=generator)
        return iter(drawn[self.rank::self.world].tolist())

    def __len__(self) -> int:
        return self.per_rank


class ShardOrderSampler(Sampler[int]):
    """Training order that reads a packed dataset shard by shard (``data.shard_order``).

    Each epoch a generator seeded by ``seed + epoch`` draws an order of the shards and an
    order of the items within each; shard by shard, in that order, each whole shard goes to
    the rank with the fewest items so far (the lowest rank on a tie). Every rank draws the
    same, so the ranks' items are disjoint. Shards rarely divide evenly: a rank's items past
    ``ceil(n / world)`` go, in order, to the ranks short of it (the tail of a shard is then
    read by another rank), and what is still short repeats a rank's first items (as
    ``DistributedSampler`` pads), so every rank takes as many steps and every item is read
    each epoch.

    Args:
        item_shards: The shard of each item of the dataset.
        seed: ``train.seed``.
        rank_: This process's rank.
        world: The number of processes.
    """

    def __init__(self, item_shards: Sequence[str], *, seed: int, rank_: int = 0,
                 world: int = 1) -> None:
        groups: dict[str, list[int]] = {}
        for index, shard in enumerate(item_shards):
            groups.setdefault(shard, []).append(index)
        self.groups = [groups[name] for name in sorted(groups)]
        self.rank, self.world, self.seed, self.epoch = rank_, world, seed, 0
        self.per_rank = math.ceil(len(item_shards) / world)

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of ``epoch`` next."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        taken: list[list[int]] = [[] for _ in range(self.world)]
        for k in torch.randperm(len(self.groups), generator=generator).tolist():
            group = self.groups[k]
            order = torch.randperm(len(group), generator=generator).tolist()
            fewest = min(range(self.world), key=lambda r: len(taken[r]))
            taken[fewest] += [group[i] for i in order]
        spare = [i for part in taken for i in part[self.per_rank:]]
        for part in taken:
            del part[self.per_rank:]
            moved = self.per_rank - len(part)
            part += spare[:moved]
            del spare[:moved]
        mine = taken[self.rank] or [i for part in taken for i in part]
        while len(mine) < self.per_rank:
            mine = mine + mine[: self.per_rank - len(mine)]
        return iter(mine)

    def __len__(self) -> int:
        return self.per_rank


def per_rank_batch_size(batch_size: int, world: int | None = None, *,
                        samples_per_case: int = 1) -> int:
    """Each rank's share of the global ``train.batch_size`` over ``world`` processes (this
    run's world size when omitted). ``medxfer run`` calls it before training (with ``N``
    for ``--nproc N``, before it starts any worker), the training loaders inside each rank.

    Args:
        batch_size: The global ``train.batch_size``.
        world: The number of processes.
        samples_per_case: Patches each case gives (:meth:`RunConfig.patches_per_case`):
            a rank's batch is drawn from whole cases, so its share must be a multiple.

    Raises:
        ConfigError: when the batch cannot be split evenly between the processes, or a
            process's share into whole cases.
    """
    world = world_size() if world is None else world
    if batch_size % world:
        raise ConfigError(f"train.batch_size {batch_size} is the global batch and must split "
                          f"evenly over {world} processes; set it to a multiple of {world}")
    per_rank = batch_size // world
    if per_rank % samples_per_case:
        share = f" ({per_rank} per process over {world})" if world > 1 else ""
        raise ConfigError(
            f"train.batch_size {batch_size}{share} counts patches, and each case gives "
            f"data.patch.samples_per_case {samples_per_case}; a batch is made of whole cases, "
            f"so set train.batch_size to a multiple of {samples_per_case * world} (or change "
            "data.patch.samples_per_case)")
    return per_rank


def training_sampler(dataset: Any, *, seed: int, weights: Sequence[float] | None) -> Sampler:
    """This rank's training sampler: shuffled ``DistributedSampler`` seeded by ``seed``, or
    :class:`DistributedWeightedSampler` when per-item ``weights`` are given."""
    if weights is not None:
        return DistributedWeightedSampler(weights, rank_=rank(), world=world_size(), seed=seed)
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True,
                              seed=seed, drop_last=False)


def set_epoch(loaders: Sequence[Any], epoch: int) -> None:
    """Tell the distributed samplers of ``loaders`` which epoch starts (reshuffles them)."""
    for loader in loaders:
        sampler = getattr(loader, "sampler", None)
        if callable(getattr(sampler, "set_epoch", None)):
            sampler.set_epoch(epoch)


def whole_loader(loader: Any) -> Any:
    """A loader over the whole dataset of this rank's training ``loader`` (shuffled, the
    global batch size), for hooks that read data after training, such as statistics
    recomputed at the end of the fit; ``loader`` itself when not distributed."""
    if loader is None or not is_active():
        return loader
    from torch.utils.data import DataLoader

    seed = int(getattr(getattr(loader, "sampler", None), "seed", 0))
    return DataLoader(loader.dataset, batch_size=(loader.batch_size or 1) * world_size(),
                      shuffle=True, generator=torch.Generator().manual_seed(seed),
                      collate_fn=loader.collate_fn, num_workers=loader.num_workers,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last)
