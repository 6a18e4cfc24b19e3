"""``data.cache: auto``: a memory budget shared by the splits, compact lossless storage,
the rest on disk or preprocessed again, and user errors from the filling workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxfer import memory_size as M
from medxfer.config import PreprocessConfig, validate_config
from medxfer.data import cache as C
from medxfer.data.datasets import cached_dataset
from medxfer.data.preprocess import preprocess_transform
from medxfer.errors import ConfigError, DataError
from medxfer.memory_size import format_bytes, parse_memory
from tests.data.datafiles import write_nifti, write_png

# -- sizes ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("8GB", 8_000_000_000), ("512MiB", 512 << 20), ("1.5 gb", 1_500_000_000), ("2e9", 2e9),
    (0.3, 0.3), ("0.5", 0.5), (1, 1.0), (4096, 4096), ("100kb", 100_000)])
def test_memory_sizes_read_as_people_write_them(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "-1GB", "8 parsecs", 0, -0.5, "0"])
def test_a_bad_memory_size_names_the_key(text):
    with pytest.raises(ConfigError, match=r"data.cache_memory: .* is not a memory size; give "
                                          r"bytes with a unit \(e.g. 8GB, 512MiB\)"):
        parse_memory(text)


def test_the_config_refuses_a_bad_cache_memory_and_takes_a_good_one():
    with pytest.raises(ConfigError, match="cache_memory"):
        validate_config({"data": {"cache_memory": "a lot"}})
    config = validate_config({"data": {"cache_memory": "2GB"}})
    assert config.data.cache == "auto" and config.data.cache_memory == "2GB"


def test_format_bytes():
    assert [format_bytes(n) for n in (12, 1_500, 812e6, 1.44e9, 25e9)] == \
        ["12 B", "1.5 kB", "812 MB", "1.4 GB", "25 GB"]


def test_the_budget_is_a_share_of_available_memory_split_between_local_processes(monkeypatch):
    monkeypatch.setattr(C, "available_memory", lambda: 10_000_000_000)
    budget = C.CacheBudget.from_setting(None, processes=2)
    assert budget.total == 2_500_000_000
    assert budget.source == "50% of 10 GB available, shared by 2 processes"
    assert C.CacheBudget.from_setting("3GB").total == 3_000_000_000


def test_available_memory_respects_a_cgroup_limit(tmp_path, monkeypatch):
    (tmp_path / "max").write_text("2000000000\n")
    (tmp_path / "current").write_text("500000000\n")
    monkeypatch.setattr(M, "CGROUP_FILES", ((str(tmp_path / "max"), str(tmp_path / "current")),))
    monkeypatch.setattr(M, "_meminfo_available", lambda: 8_000_000_000)
    assert M.available_memory() == 1_500_000_000
    (tmp_path / "max").write_text("max\n")
    assert M.available_memory() == 8_000_000_000


# -- lossless compaction --------------------------------------------------------------------

def _roundtrip(tensor: torch.Tensor) -> tuple[torch.Tensor, dict]:
    item = C.compact_item({"image": tensor, "id": "x"})
    back = C.expand_item(item)["image"]
    assert back.dtype == tensor.dtype and torch.equal(back, tensor)
    return item["image"], item.get(C.COMPACT_KEY, {})


def test_8bit_images_scaled_by_1_over_255_are_kept_as_uint8_bit_for_bit():
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16)
    stored, how = _roundtrip(values.float() / 255.0)
    assert stored.dtype == torch.uint8 and how == {"image": "div255"}


@pytest.mark.parametrize(("values", "dtype"), [((0, 255), torch.uint8),
                                                (-1024, torch.int16), (3000, torch.int16)])
def test_whole_number_images_are_kept_in_the_smallest_integer_type(values, dtype):
    image = torch.tensor(values, dtype=torch.float32).reshape(1, -1, 1).repeat(1, 1, 4)
    stored, how = _roundtrip(image)
    assert stored.dtype == dtype and how == {"image": "float32"}


@pytest.mark.parametrize("image", [
    torch.linspace(-2.0, 3.0, 64).reshape(1, 8, 8),           # z-scored
    torch.linspace(0.0, 1.0, 100).reshape(1, 10, 10) ** 2,    # resampled, in [0, 1]
    torch.tensor([[[70000.0, 1.0]]]),                          # whole numbers beyond int16
    torch.tensor([[[0.0, float("nan")]]]),
])
def test_other_images_stay_float32(image):
    item = C.compact_item({"image": image})
    assert item["image"] is image and C.COMPACT_KEY not in item


def test_masks_are_kept_as_uint8_and_come_back_as_int64():
    mask = torch.randint(0, 3, (1, 8, 8, 8))
    item = C.compact_item({"image": torch.zeros(1, 8, 8, 8) + 0.5, "label": mask})
    assert item["label"].dtype == torch.uint8
    assert C.item_nbytes(item) == 4 * 512 + 512
    back = C.expand_item(item)["label"]
    assert back.dtype == torch.int64 and torch.equal(back, mask)


# -- the budget cache ----------------------------------------------------------------------

def _png_cases(root, n, size=32):
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        write_png(root / f"{i}.png", (rng.random((size, size)) * 255).astype(np.uint8))
        cases.append({"id": f"c{i}", "image": str(root / f"{i}.png"), "label": i % 2})
    return cases


def _chain(task="classification", dims=2):
    return preprocess_transform(PreprocessConfig(), task=task, spatial_dims=dims,
                                num_classes=2, imagenet_norm=False)


def _assert_same_items(a, b):
    assert len(a) == len(b)
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x["id"] == y["id"] and x["label"] == y["label"]
        assert x["image"].dtype == y["image"].dtype == torch.float32
        assert torch.equal(x["image"], y["image"]), i


@pytest.mark.parametrize("n", [10, 80])  # 80: filled by worker processes
def test_auto_gives_the_uncached_items_from_memory_and_from_disk(tmp_path, n):
    cases, chain = _png_cases(tmp_path, n), _chain()
    per_case = 32 * 32  # uint8
    budget = C.CacheBudget(total=per_case * (n // 2) + 10, source="a test")
    auto = cached_dataset(cases, chain, cache="auto", cache_dir=tmp_path / "cache", key={},
                          budget=budget, label="training")
    plain = cached_dataset(cases, chain, cache="none", cache_dir=None, key={})
    assert len(auto.memory) == n // 2 and budget.used == per_case * (n // 2)
    _assert_same_items(auto, plain)
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == n - n // 2  # written when read
    _assert_same_items(auto, plain)  # and read back from disk
    assert auto.summary.startswith(f"training {n // 2} of {n} cases in memory (")
    assert "uint8 (lossless)" in auto.summary
    assert f"the other {n - n // 2} are cached on disk as they are first read" in auto.summary


def test_a_cache_filled_by_workers_keeps_no_file_open_per_case(tmp_path):
    """Tensors from worker processes live in shared memory, one open file each while they
    are kept: 100k cached images ran out of file descriptors."""
    import os

    cases = _png_cases(tmp_path, 300, size=8)
    assert C.fill_workers(len(cases)) > 0 or os.cpu_count() == 1
    before = len(os.listdir("/proc/self/fd"))
    auto = cached_dataset(cases, _chain(), cache="auto", cache_dir=None, key={},
                          budget=C.CacheBudget(total=1 << 30, source="a test"))
    assert len(auto.memory) == 300
    assert len(os.listdir("/proc/self/fd")) - before < 20


def test_splits_share_one_budget_in_order(tmp_path):
    cases, chain = _png_cases(tmp_path, 12), _chain()
    budget = C.CacheBudget(total=32 * 32 * 10, source="a test")
    train = cached_dataset(cases[:8], chain, cache="auto", cache_dir=None, key={},
                           budget=budget, label="training")
    val = cached_dataset(cases[8:], chain, cache="auto", cache_dir=None, key={},
                         budget=budget, label="validation")
    assert (len(train.memory), len(val.memory)) == (8, 2)
    assert "(no cache folder)" in val.summary and val.rest is not None
    _assert_same_items(val, cached_dataset(cases[8:], chain, cache="none", cache_dir=None,
                                           key={}))


def test_no_room_on_the_disk_preprocesses_the_rest_each_time(tmp_path, monkeypatch):
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(C.shutil, "disk_usage", lambda _: usage(10, 10, 1000))
    cases = _png_cases(tmp_path, 6)
    auto = cached_dataset(cases, _chain(), cache="auto", cache_dir=tmp_path / "cache", key={},
                          budget=C.CacheBudget(total=0, source="a test"))
    assert not auto.memory and "preprocessed again each time they are read (a disk cache " \
        "needs about 6.1 kB;" in auto.summary
    assert auto[5]["image"].shape == (1, 32, 32)
    assert not list((tmp_path / "cache").rglob("*.pt"))


def test_a_volume_cache_keeps_masks_compact_and_items_exact(tmp_path):
    rng = np.random.default_rng(1)
    cases = []
    for i in range(3):
        write_nifti(tmp_path / f"v{i}.nii.gz", rng.random((12, 12, 12)).astype(np.float32))
        write_nifti(tmp_path / f"m{i}.nii.gz", (rng.random((12, 12, 12)) > 0.5).astype(np.uint8))
        cases.append({"id": f"v{i}", "image": str(tmp_path / f"v{i}.nii.gz"),
                      "label": str(tmp_path / f"m{i}.nii.gz")})
    chain = _chain("segmentation", 3)
    auto = cached_dataset(cases, chain, cache="auto", cache_dir=None, key={},
                          budget=C.CacheBudget(total=1 << 30, source="a test"))
    plain = cached_dataset(cases, chain, cache="none", cache_dir=None, key={})
    assert auto.memory[0]["label"].dtype == torch.uint8
    assert auto.memory[0]["image"].dtype == torch.float32  # z-scored: not compactable
    for i in range(3):
        assert torch.equal(auto[i]["image"], plain[i]["image"])
        assert auto[i]["label"].dtype == plain[i]["label"].dtype
        assert torch.equal(auto[i]["label"], plain[i]["label"])


@pytest.mark.parametrize("n", [8, 70])  # 70: the error comes from a worker process
def test_a_bad_case_while_the_cache_fills_raises_its_data_error(tmp_path, n):
    cases = _png_cases(tmp_path, n)
    (tmp_path / "5.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"5\.png"):
        cached_dataset(cases, _chain(), cache="auto", cache_dir=None, key={},
                       budget=C.CacheBudget(total=1 << 30, source="a test"))


def test_the_run_reports_how_the_cache_was_filled(tmp_path, capsys):
    from medxfer.progress import reporting

    cases = _png_cases(tmp_path, 4)
    budget = C.CacheBudget(total=1 << 30, source="50% of 2.1 GB available")
    cached_dataset(cases, _chain(), cache="auto", cache_dir=None, key={}, budget=budget,
                   label="training")
    with reporting(True):
        C.report(budget)
    line = capsys.readouterr().err.strip()
    assert line == ("data cache (auto; budget 1.1 GB, 50% of 2.1 GB available): every case "
                    "in memory, 4.1 kB as uint8 (lossless)")
    budget.splits.append((1, 3, 10, "float32"))
    budget.lines.append("validation 1 of 3 cases in memory (10 B, float32, 0 s), the memory "
                        "budget ran out: ...")
    with reporting(True):
        C.report(budget)
    line = capsys.readouterr().err.strip()
    assert line.startswith("data cache (auto; budget 1.1 GB, 50% of 2.1 GB available): "
                           "training 4 of 4 cases in memory (4.1 kB, uint8 (lossless), ")
    assert line.endswith("; validation 1 of 3 cases in memory (10 B, float32, 0 s), the "
                         "memory budget ran out: ...")
