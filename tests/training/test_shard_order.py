"""``data.shard_order``: a packed dataset's training order, shard by shard, and its split
between ranks (:class:`medxfer.training.shards.ShardOrderSampler`)."""

from __future__ import annotations

import pytest

from medxfer.config import load_config
from medxfer.errors import ConfigError
from medxfer.training.loaders import make_loader
from medxfer.training.shards import ShardOrderSampler

#: 23 items in shards of 5 (the last of 3), listed out of order.
ITEM_SHARDS = [f"train-{i // 5:06d}.tar" for i in range(23)][::-1]


def _runs(order: list[int]) -> list[str]:
    """The shards in the order ``order`` reads them, each run of items of one shard once."""
    runs: list[str] = []
    for i in order:
        if not runs or runs[-1] != ITEM_SHARDS[i]:
            runs.append(ITEM_SHARDS[i])
    return runs


def test_one_process_reads_every_item_once_a_shard_at_a_time():
    sampler = ShardOrderSampler(ITEM_SHARDS, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(23)) and len(sampler) == 23
    assert sorted(_runs(order)) == sorted(set(ITEM_SHARDS))  # each shard read in one go
    assert list(ShardOrderSampler(ITEM_SHARDS, seed=3)) == order  # seeded
    sampler.set_epoch(1)
    assert list(sampler) != order  # another order each epoch


def test_two_ranks_take_whole_shards_every_item_and_the_same_number_of_steps():
    for epoch in range(4):
        parts = []
        for rank in range(2):
            sampler = ShardOrderSampler(ITEM_SHARDS, seed=0, rank_=rank, world=2)
            sampler.set_epoch(epoch)
            parts.append(list(sampler))
            assert len(parts[-1]) == len(sampler) == 12
        assert set(parts[0]) | set(parts[1]) == set(range(23))  # one item repeated to pad
        assert len(set(parts[0]) & set(parts[1])) <= 1
        owned = [{ITEM_SHARDS[i] for i in part} for part in parts]
        assert len(owned[0] & owned[1]) <= 1  # whole shards, but the tail of one evens out


def test_more_ranks_than_shards_still_gives_every_rank_items():
    parts = [list(ShardOrderSampler(ITEM_SHARDS[:7], seed=0, rank_=r, world=3))
             for r in range(3)]
    assert [len(p) for p in parts] == [3, 3, 3]


def test_shard_order_needs_packed_data():
    from medxfer.data.loading import load_data

    config = load_config(None, ["data.shard_order=true", "data.cache=none", "data.limit=8"])
    bundle = load_data(config, imagenet_norm=False)
    with pytest.raises(ConfigError, match="data.shard_order reads the shards of packed data"):
        make_loader(bundle.train, config, train=True)
