"""Packed datasets (`medxfer data pack`): the pack reads as its source does, item for item,
split for split; damaged packs are refused naming the shard."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from medxfer.config import load_config
from medxfer.data.layouts import build_datalist, detect_format
from medxfer.data.loading import load_data
from medxfer.data.pack_writer import pack_dataset, pack_run_config, parse_size
from medxfer.data.packed_shards import verify_pack
from medxfer.data.splits import SPLITS
from medxfer.errors import ConfigError, DataError, OutputError
from medxfer.training.shards import ShardSampler
from tests.data.layout_fixtures import class_folders, msd_folder

PLAIN = ["data.augment.preset=none", "data.cache=none"]


@pytest.fixture(scope="module")
def classification(tmp_path_factory) -> tuple[Path, Path]:
    """BreastMNIST class folders (24 PNGs) and their pack, in shards of at most 20 kB."""
    from tests.conftest import shared_data_dir

    shared = shared_data_dir()
    if not shared.is_dir():
        pytest.skip("real data not available")
    root = tmp_path_factory.mktemp("pack_cls")
    source = class_folders(root / "folders", shared, per_class=12)
    pack = root / "pack"
    pack_dataset(pack_run_config(source, None, []), pack, shard_size=parse_size("20kB"))
    return source, pack


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory) -> tuple[Path, Path]:
    """An MSD folder of 10 Hippocampus NIfTI volumes and masks, and its pack."""
    from tests.conftest import shared_data_dir

    shared = shared_data_dir()
    if not shared.is_dir():
        pytest.skip("real data not available")
    root = tmp_path_factory.mktemp("pack_seg")
    source = msd_folder(root / "msd", shared, n=10)
    pack = root / "pack"
    pack_dataset(pack_run_config(source, None, []), pack, shard_size=parse_size("1GB"))
    return source, pack


def _bundle(task: str, path: Path, extra: list[str] = ()) -> object:
    config = load_config(None, [f"task={task}", f"data.path={path}", *PLAIN, *extra])
    return load_data(config, imagenet_norm=False)


def _assert_same_items(a, b) -> None:
    assert [c["id"] for c in a.cases] == [c["id"] for c in b.cases]
    assert [c["split"] for c in a.cases] == [c["split"] for c in b.cases]
    assert (a.class_names, a.in_channels, a.spatial_dims) == \
        (b.class_names, b.in_channels, b.spatial_dims)
    for split in SPLITS:
        left, right = getattr(a, split), getattr(b, split)
        assert len(left) == len(right) > 0
        for i in range(len(left)):
            x, y = left[i], right[i]
            assert x["id"] == y["id"]
            assert x["image"].dtype == y["image"].dtype == torch.float32
            assert torch.equal(x["image"], y["image"]), (split, x["id"])
            assert torch.equal(x["label"], y["label"]), (split, x["id"])


def test_a_packed_class_folder_gives_the_items_of_the_folder(classification):
    source, pack = classification
    assert detect_format(pack) == "packed"
    _assert_same_items(_bundle("classification", source), _bundle("classification", pack))


def test_a_packed_segmentation_set_gives_the_volumes_and_masks_of_the_folder(segmentation):
    source, pack = segmentation
    # preprocessing applies at training time, to the arrays as read
    extra = ["data.preprocess.spacing=[1.5,1.5,1.5]", "data.preprocess.crop_size=[24,32,24]"]
    _assert_same_items(_bundle("segmentation", source, extra),
                       _bundle("segmentation", pack, extra))


def test_pack_layout_stores_images_compactly_in_webdataset_shards(classification):
    _, pack = classification
    index = json.loads((pack / "index.json").read_text())
    assert index["task"] == "classification"
    assert index["split_counts"] == {"train": 16, "val": 4, "test": 4}
    assert len([s for s in index["shards"] if s.startswith("train-")]) > 1  # 20 kB shards
    assert verify_pack(pack) == []
    sample = index["samples"][0]
    with tarfile.open(pack / sample["shard"]) as tar:
        names = tar.getnames()
        assert names[:2] == [f"{sample['key']}.json", f"{sample['key']}.npy"]
        array = np.load(io.BytesIO(tar.extractfile(f"{sample['key']}.npy").read()))
    assert array.dtype == np.uint8  # as read, not preprocessed
    offset, size = sample["members"]["npy"]
    assert np.array_equal(np.load(_bytes_at(pack / sample["shard"], offset, size)), array)


def _bytes_at(path: Path, offset: int, size: int) -> io.BytesIO:
    with open(path, "rb") as handle:
        handle.seek(offset)
        return io.BytesIO(handle.read(size))


def test_two_ranks_read_disjoint_cases_that_cover_each_split(classification):
    """The pack is a map-style dataset: the run's DDP samplers split it as the folder."""
    source, pack = classification
    folder, packed = _bundle("classification", source), _bundle("classification", pack)
    for split in SPLITS:
        dataset = getattr(packed, split)
        ids = []
        for rank in range(2):
            if split == "train":
                sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True,
                                             seed=0)
            else:
                sampler = ShardSampler(len(dataset), rank, 2)
            mine = [dataset[i]["id"] for i in sampler]
            assert mine == [getattr(folder, split)[i]["id"] for i in sampler]
            ids.append(mine)
        assert not set(ids[0]) & set(ids[1])
        assert sorted(ids[0] + ids[1]) == sorted(c["id"] for c in packed.cases
                                                 if c["split"] == split)


def test_a_truncated_or_missing_shard_is_refused_naming_it(classification, tmp_path):
    import shutil

    _, pack = classification
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    shard = copy / "val-000000.tar"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(DataError, match="val-000000.tar.*truncated"):
        build_datalist(copy)
    assert any("val-000000.tar" in p for p in verify_pack(copy))
    shard.unlink()
    with pytest.raises(DataError, match="val-000000.tar.*missing"):
        build_datalist(copy)


def test_a_changed_shard_fails_verification(classification, tmp_path):
    import shutil

    _, pack = classification
    copy = tmp_path / "pack"
    shutil.copytree(pack, copy)
    shard = copy / "test-000000.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert verify_pack(copy) == [f"shard {str(shard)!r} does not match the SHA-256 its index "
                                 "records (damaged or changed)"]


def test_packing_refuses_an_existing_folder_and_replaces_it_only_when_asked(
        classification, tmp_path):
    source, _ = classification
    target = tmp_path / "pack"
    (target / "keep.txt").parent.mkdir()
    (target / "keep.txt").write_text("results")
    config = pack_run_config(source, None, ["data.limit=4"])
    with pytest.raises(OutputError, match="exists and is not empty.*--overwrite"):
        pack_dataset(config, target, shard_size=10 ** 9)
    assert (target / "keep.txt").read_text() == "results"
    pack_dataset(config, target, shard_size=10 ** 9, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack"]
    assert not (target / "keep.txt").exists()
    assert json.loads((target / "index.json").read_text())["split_counts"] == \
        {"train": 4, "val": 4, "test": 4}


def test_packing_refuses_data_it_cannot_read(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        pack_dataset(pack_run_config(tmp_path / "nowhere", None, []), tmp_path / "pack",
                     shard_size=10 ** 9)
    assert not (tmp_path / "pack").exists() and not (tmp_path / "pack.partial").exists()


@pytest.mark.parametrize("text", ["", "1XB", "-5MB", "0"])
def test_a_shard_size_must_be_a_size(text):
    with pytest.raises(ConfigError, match="--shard-size"):
        parse_size(text)


def test_shard_sizes_read_as_written():
    assert parse_size("1GB") == 10 ** 9
    assert parse_size("64MiB") == 64 * 2 ** 20
    assert parse_size("1.5kb") == 1500
    assert parse_size("4096") == 4096


@pytest.mark.parametrize("cache", ["none", "auto"])
def test_shard_order_reads_the_training_cases_of_the_pack_shard_by_shard(classification, cache):
    from medxfer.data.packed_shards import item_shards
    from medxfer.training.loaders import make_loader
    from medxfer.training.shards import ShardOrderSampler

    _, pack = classification
    config = load_config(None, ["task=classification", f"data.path={pack}", *PLAIN,
                                "data.shard_order=true", "train.batch_size=4",
                                f"data.cache={cache}"])
    bundle = load_data(config, imagenet_norm=False)
    loader = make_loader(bundle.train, config, train=True)
    assert isinstance(loader.sampler, ShardOrderSampler)
    shards = item_shards(bundle.train)
    assert len(set(shards)) > 1
    ids = [i for batch in loader for i in batch["id"]]
    assert sorted(ids) == sorted(c["id"] for c in bundle.cases if c["split"] == "train")
    runs = [shards[i] for k, i in enumerate(loader.sampler)
            if k == 0 or shards[i] != shards[list(loader.sampler)[k - 1]]]
    assert len(runs) == len(set(shards))  # each shard read in one go


def test_a_pack_that_fails_leaves_no_partial_folder(classification, tmp_path, monkeypatch):
    import medxfer.data.pack_writer as writer

    source, _ = classification

    def unreadable(case, key="image"):
        raise DataError(f"{case[key]!r} cannot be read")

    monkeypatch.setattr(writer, "read_case", unreadable)
    with pytest.raises(DataError, match="cannot be read"):
        pack_dataset(pack_run_config(source, None, ["data.limit=4"]), tmp_path / "pack",
                     shard_size=10 ** 9)
    assert list(tmp_path.iterdir()) == []
