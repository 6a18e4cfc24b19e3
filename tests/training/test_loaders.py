"""Training loaders: torch and thread loaders, augmentation on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medxfer.config import RunConfig
from medxfer.data.augment import build_augmentation
from medxfer.data.datasets import ArrayCases, CaseDataset
from medxfer.data.transforms import AdaptChannels
from medxfer.training.loaders import make_loader
from medxfer.errors import ConfigError


def _dataset(n: int = 20) -> CaseDataset:
    rng = np.random.default_rng(0)
    base = ArrayCases(rng.integers(0, 255, (n, 1, 16, 16), dtype=np.uint8),
                      [i % 2 for i in range(n)], [f"c{i}" for i in range(n)], intensity="uint8",
                      image_size=None, ct_window=[0, 1], percentiles=[0, 100])
    augment = build_augmentation("standard", None, spatial_dims=2, segmentation=False,
                                 spatial_size=[16, 16], seed=3)
    return CaseDataset(base, task="classification", adapt=AdaptChannels("grey", False),
                       augment=augment, seed=3)


def _config(**data) -> RunConfig:
    return RunConfig.model_validate({"data": data, "train": {"batch_size": 6, "seed": 3}})


def _batches(loader) -> list[dict]:
    return [{"image": b["image"].clone(), "label": b["label"].clone()} for b in loader]


def test_thread_loader_yields_the_same_batches_as_torch_loader():
    plain = _batches(make_loader(_dataset(), _config(), train=True))
    threaded_loader = make_loader(_dataset(), _config(loader="thread", prefetch=3), train=True)
    from monai.data import ThreadDataLoader

    assert isinstance(threaded_loader, ThreadDataLoader)
    threaded = _batches(threaded_loader)
    assert len(plain) == len(threaded) == 4  # 20 items, batches of 6, last of 2 kept
    for a, b in zip(plain, threaded):
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["label"], b["label"])


@pytest.mark.parametrize("loader_kind", ["torch", "thread"])
def test_data_random_state_continues_order_and_augmentation(loader_kind):
    """A checkpoint's data streams: the next epoch after restoring equals the next epoch
    of the loader that was never stopped (shuffle and per-item augmentation alike)."""
    from medxfer.training.loaders import data_random_state, set_data_random_state

    config = _config(loader=loader_kind)
    loader = make_loader(_dataset(), config, train=True)
    _batches(loader)  # epoch 0
    saved = data_random_state([loader, None])
    expected = _batches(loader)  # epoch 1
    restarted = make_loader(_dataset(), config, train=True)  # a new process: seeded afresh
    assert not torch.equal(_batches(make_loader(_dataset(), config, train=True))[0]["image"],
                           expected[0]["image"])
    set_data_random_state([restarted, None], saved)
    got = _batches(restarted)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_evaluation_loaders_stay_plain():
    loader = make_loader(_dataset(), _config(loader="thread"), train=False)
    assert type(loader) is torch.utils.data.DataLoader


def test_augment_on_device_moves_items_before_augmenting():
    cuda = torch.device("cuda")  # a device object needs no GPU; nothing is iterated
    dataset = _dataset()
    loader = make_loader(dataset, _config(augment_on="device"), train=True, device=cuda)
    from monai.data import ThreadDataLoader

    assert isinstance(loader, ThreadDataLoader)
    assert dataset.augment_device == cuda
    assert loader.pin_memory is False


def test_augment_on_device_items_equal_cpu_items():
    plain, moved = _dataset(), _dataset()
    moved.augment_device = torch.device("cpu")
    for i in range(5):
        a, b = plain[i], moved[i]
        assert torch.equal(a["image"], b["image"]) and a["label"] == b["label"]


def test_augment_on_device_is_a_no_op_on_cpu_training():
    dataset = _dataset()
    loader = make_loader(dataset, _config(augment_on="device"), train=True,
                         device=torch.device("cpu"))
    assert dataset.augment_device is None
    assert type(loader) is torch.utils.data.DataLoader


def test_augment_on_device_refuses_worker_processes():
    with pytest.raises(ConfigError, match="num_workers"):
        make_loader(_dataset(), _config(augment_on="device", num_workers=2), train=True,
                    device=torch.device("cuda"))


class _Broken(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, index: int) -> dict:
        if index == 7:
            raise ValueError("case c7: unreadable file")
        return {"image": torch.zeros(1, 4, 4), "label": torch.tensor(0)}


def test_thread_loader_raises_data_errors_in_the_training_thread():
    config = RunConfig.model_validate({"data": {"loader": "thread"},
                                       "train": {"batch_size": 2, "seed": 0}})
    loader = make_loader(_Broken(), config, train=True)
    with pytest.raises(ValueError, match="case c7: unreadable file"):
        for _ in loader:
            pass


# -- data.augment_on: batch -----------------------------------------------------------------

def _batch_dataset(ops: list[dict] | None = None, *, n: int = 20) -> CaseDataset:
    from medxfer.data.augment import resolve_ops
    from medxfer.data.batch_augment import BatchAugmentation

    plain = _dataset(n)
    augment = BatchAugmentation(resolve_ops("standard", ops), spatial_dims=2,
                                segmentation=False, spatial_size=[16, 16], seed=3)
    return CaseDataset(plain.base, task="classification", adapt=AdaptChannels("rgb", True),
                       seed=3, batch_augment=augment)


def test_batch_augmented_loader_gives_the_plain_batches_when_no_op_fires():
    dataset = _batch_dataset([{"name": "flip", "prob": 0.0}])
    plain = CaseDataset(dataset.base, task="classification", adapt=AdaptChannels("rgb", True))
    batches = _batches(make_loader(dataset, _config(augment_on="batch"), train=True))
    expected = _batches(make_loader(plain, _config(), train=True))  # the same shuffle
    assert [len(b["image"]) for b in batches] == [6, 6, 6, 2]
    for a, b in zip(batches, expected):
        assert torch.allclose(a["image"], b["image"], atol=1e-6)
        assert torch.equal(a["label"], b["label"])
    assert batches[0]["image"].shape == (6, 3, 16, 16)  # adapted: grey to RGB, normalised


def test_batch_augmented_loader_augments_reproducibly_and_differently_per_epoch():
    loader = make_loader(_batch_dataset(), _config(augment_on="batch"), train=True)
    first, second = _batches(loader), _batches(loader)
    again = _batches(make_loader(_batch_dataset(), _config(augment_on="batch"), train=True))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert not torch.equal(first[0]["image"], second[0]["image"])
    assert type(loader.dataset).__name__ == "RawItems"  # items are read raw, finished batched


def test_batch_augmentation_in_worker_processes():
    loader = make_loader(_batch_dataset(), _config(augment_on="batch", num_workers=2),
                         train=True)
    batches = _batches(loader)
    assert [b["image"].shape for b in batches][0] == (6, 3, 16, 16)
    again = _batches(make_loader(_batch_dataset(), _config(augment_on="batch", num_workers=2),
                                 train=True))
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(batches, again))


def test_batch_augmentation_goes_to_the_gpu_in_the_loader_thread():
    cuda = torch.device("cuda")  # nothing is iterated
    loader = make_loader(_batch_dataset(), _config(augment_on="batch"), train=True, device=cuda)
    from monai.data import ThreadDataLoader

    assert isinstance(loader, ThreadDataLoader) and loader.pin_memory is False
    assert loader.collate_fn.device == cuda
    with_workers = make_loader(_batch_dataset(), _config(augment_on="batch", num_workers=1),
                               train=True, device=cuda)
    assert with_workers.collate_fn.device is None and with_workers.pin_memory is True


def test_unlabelled_target_data_is_batch_augmented_too():
    from medxfer.workflows.domain import WithoutLabels

    loader = make_loader(WithoutLabels(_batch_dataset()), _config(augment_on="batch"),
                         train=True)
    batch = next(iter(loader))
    assert "label" not in batch and batch["image"].shape == (6, 3, 16, 16)


def test_load_data_with_batch_augmentation(tmp_path):
    from medxfer.data import load_data

    config = RunConfig.model_validate({"task": "segmentation", "data": {
        "augment_on": "batch", "augment": {"preset": "heavy"}}})
    with pytest.raises(ConfigError, match=r"\(elastic\).*augment_on: cpu"):
        load_data(config, imagenet_norm=False)
    config = RunConfig.model_validate({"task": "segmentation", "data": {
        "augment_on": "batch", "patch": {"size": [16, 16, 16], "samples_per_case": 2},
        "augment": {"ops": [{"name": "flip", "axes": [0, 1, 2]}, {"name": "affine"}]}},
        "train": {"batch_size": 4}})
    bundle = load_data(config, imagenet_norm=False)
    assert bundle.train.batch_augment is not None and bundle.val.batch_augment is None
    batch = next(iter(make_loader(bundle.train, config, train=True)))
    assert batch["image"].shape == (4, 1, 16, 16, 16)
    assert batch["label"].shape == (4, 1, 16, 16, 16) and batch["label"].dtype == torch.int64
    from medxfer.data.augment import CachedFgBgIndices

    memo = [t for t in bundle.train.augment.transforms if isinstance(t, CachedFgBgIndices)][0]
    assert len(memo._memo) == 2  # the two cases drawn: their patch indices are kept


def test_small_items_are_augmented_on_one_thread_with_the_same_values(monkeypatch):
    import contextlib

    import medxfer.data.datasets as datasets

    threads = torch.get_num_threads()
    seen = []
    real = datasets._one_intra_op_thread

    @contextlib.contextmanager
    def spy(numel):
        with real(numel):
            seen.append(torch.get_num_threads())
            yield

    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(datasets, "_one_intra_op_thread", spy)
        fast = _batches(make_loader(_dataset(), _config(), train=True))
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2  # restored
        monkeypatch.setattr(datasets, "_one_intra_op_thread", contextlib.nullcontext)
        plain = _batches(make_loader(_dataset(), _config(), train=True))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(fast, plain))
    with datasets._one_intra_op_thread(datasets.GRAIN_SIZE):  # large items keep every thread
        assert torch.get_num_threads() == threads
