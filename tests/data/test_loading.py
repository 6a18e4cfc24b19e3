"""load_data and inference_transform: the trainer's interface, on sample and real data."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medxfer.config import RunConfig
from medxfer.data import DataBundle, inference_transform, load_data
from medxfer.errors import ConfigError, DataError
from tests.data.datafiles import write_nifti, write_png


def _config(**data):
    task = data.pop("task", "classification")
    seed = data.pop("seed", 0)
    return RunConfig.model_validate({"task": task, "data": data, "train": {"seed": seed}})


def test_default_config_loads_sample_classification_quickly():
    import monai.transforms  # noqa: F401  (the import itself is not the data layer's time)

    tic = time.perf_counter()
    bundle = load_data(RunConfig(), imagenet_norm=True)
    assert time.perf_counter() - tic < 5
    assert isinstance(bundle, DataBundle)
    assert (bundle.task, bundle.spatial_dims, bundle.in_channels) == ("classification", 2, 1)
    assert bundle.class_names == ["normal", "lesion"] and bundle.num_classes == 2
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 160
    assert bundle.train_labels == [c["label"] for c in bundle.cases if c["split"] == "train"]
    item = bundle.train[0]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 64, 64)
    assert item["label"].dtype == torch.int64 and item["label"].ndim == 0
    assert isinstance(item["id"], str)
    patients = {}
    for case in bundle.cases:
        assert patients.setdefault(case["patient_id"], case["split"]) == case["split"]


def test_train_augmentation_is_seeded_and_eval_is_not_augmented():
    a = load_data(_config(seed=7), imagenet_norm=False)
    b = load_data(_config(seed=7), imagenet_norm=False)
    first = [a.train[i]["image"] for i in range(6)]
    assert all(torch.equal(x, b.train[i]["image"]) for i, x in enumerate(first))
    assert torch.equal(a.val[0]["image"], a.val[0]["image"])
    again = [a.train[i]["image"] for i in range(6)]  # the stream moves on between epochs
    assert not all(torch.equal(x, y) for x, y in zip(first, again))


def test_workers_are_deterministic():
    def epoch():
        bundle = load_data(_config(limit=8, cache="none"), imagenet_norm=False)
        loader = DataLoader(bundle.train, batch_size=4, num_workers=2,
                            generator=torch.Generator().manual_seed(0), shuffle=True)
        return torch.cat([batch["image"] for batch in loader])

    assert torch.equal(epoch(), epoch())


def test_disk_cache(tmp_path):
    bundle = load_data(_config(cache="disk", limit=4), imagenet_norm=False, cache_dir=tmp_path)
    assert bundle.val[0]["image"].shape == (1, 64, 64)
    assert list(tmp_path.glob("preprocessed-*/*.pt"))
    with pytest.raises(ConfigError, match="disk needs a cache folder"):
        load_data(_config(cache="disk"), imagenet_norm=False)


def test_inference_transform_matches_evaluation():
    config = _config(preprocess={"image_size": [48, 48], "channels": "rgb"})
    bundle = load_data(config, imagenet_norm=True)
    case = next(c for c in bundle.cases if c["split"] == "val")
    fn = inference_transform(config, imagenet_norm=True, spatial_dims=2)
    assert torch.allclose(fn(case["image"]), bundle.val[0]["image"])
    assert bundle.in_channels == 3
    with pytest.raises(DataError, match="2D image but the model takes 3D input: give volumes"):
        inference_transform(_config(), imagenet_norm=True, spatial_dims=3)(case["image"])


def test_inference_transform_matches_the_channels_the_model_was_trained_on(tmp_path):
    """A colour file for a grey model becomes grey (luma), a grey file for an RGB model
    is repeated; the result equals what the matching file gives."""
    from PIL import Image

    config = _config()  # the sample data: grey PNGs, channels auto
    bundle = load_data(config, imagenet_norm=True)
    case = next(c for c in bundle.cases if c["split"] == "val")
    grey = np.asarray(Image.open(case["image"]))
    colour = tmp_path / "colour.png"
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(colour)
    Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], axis=-1)).save(
        tmp_path / "rgba.png")
    fn = inference_transform(config, imagenet_norm=True, spatial_dims=2,
                             in_channels=bundle.in_channels)
    assert bundle.in_channels == 1
    expected = fn(case["image"])
    for path in (colour, tmp_path / "rgba.png"):
        assert torch.allclose(fn(path), expected, atol=1e-5), path.name
    rgb_model = inference_transform(config, imagenet_norm=True, spatial_dims=2, in_channels=3)
    assert rgb_model(case["image"]).shape[0] == 3
    with pytest.raises(DataError, match="has 1 channel but the model was trained on "
                                        "2-channel images"):
        inference_transform(config, imagenet_norm=True, spatial_dims=2,
                            in_channels=2)(case["image"])


def test_segmentation_sample_3d_and_2d():
    seg3 = load_data(_config(task="segmentation"), imagenet_norm=False)
    item = seg3.train[0]
    assert (seg3.spatial_dims, seg3.num_classes) == (3, 2)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (1, 32, 32, 32)
    assert item["image"].shape == (1, 32, 32, 32) and seg3.train_labels == []
    from medxfer.data.sample import ensure_sample_data

    seg2 = load_data(_config(task="segmentation", path=str(ensure_sample_data("segmentation_2d"))),
                     imagenet_norm=True)
    assert seg2.val[0]["label"].shape == (1, 64, 64) and seg2.spatial_dims == 2


def test_mask_geometry_mismatch_in_a_run(tmp_path):
    lines = ["image,mask"]
    for i in range(6):
        write_png(tmp_path / f"i{i}.png", np.zeros((8, 8)))
        write_png(tmp_path / f"m{i}.png", np.zeros((8, 8 if i != 3 else 9)))
        lines.append(f"i{i}.png,m{i}.png")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"i3\.png.*shape \(8, 8\).*m3\.png.*\(8, 9\)"):
        load_data(_config(task="segmentation", path=str(tmp_path), split={"val_fraction": 0.2,
                                                                          "test_fraction": 0.2}),
                  imagenet_norm=False)


def _mask_manifest(tmp_path, masks):
    lines = ["image,mask"]
    for i, mask in enumerate(masks):
        write_png(tmp_path / f"i{i}.png", np.full((8, 8), 100, np.uint8))
        write_png(tmp_path / f"m{i}.png", mask)
        lines.append(f"i{i}.png,m{i}.png")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    return _config(task="segmentation", path=str(tmp_path),
                   split={"val_fraction": 0.2, "test_fraction": 0.2})


def test_every_training_mask_empty_is_refused(tmp_path):
    config = _mask_manifest(tmp_path, [np.zeros((8, 8), np.uint8)] * 6)
    with pytest.raises(DataError, match="every training mask is empty"):
        load_data(config, imagenet_norm=False)


def test_mask_label_outside_the_classes_is_refused(tmp_path):
    masks = [np.zeros((8, 8), np.uint8) for _ in range(6)]
    for i, m in enumerate(masks):
        m[2:4, 2:4] = 1 if i != 4 else 3
    config = _mask_manifest(tmp_path, masks)
    with pytest.raises(DataError, match=r"m4\.png.*label values \[3\]"):
        load_data(config, imagenet_norm=False)


def test_nan_volume_in_a_run(tmp_path):
    lines = ["image,label"]
    for i in range(6):
        vol = np.full((4, 4, 4), i, np.float32)  # each its own content (no copies)
        vol[0, 0, 0] = np.nan if i == 2 else 0
        write_nifti(tmp_path / f"v{i}.nii.gz", vol)
        lines.append(f"v{i}.nii.gz,{i % 2}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"v2\.nii\.gz.*1 NaN"):
        load_data(_config(path=str(tmp_path), split={"val_fraction": 0.3, "test_fraction": 0.3}),
                  imagenet_norm=False)


def test_real_medmnist(shared_data):
    breast = load_data(_config(path=str(shared_data / "medmnist" / "breastmnist.npz"),
                               preprocess={"image_size": [64, 64]}), imagenet_norm=True)
    assert [len(breast.train), len(breast.val), len(breast.test)] == [546, 78, 156]
    assert breast.train[0]["image"].shape == (1, 64, 64)
    assert set(breast.train_labels) == {0, 1}
    adrenal = load_data(_config(path=str(shared_data / "medmnist" / "adrenalmnist3d.npz"),
                                limit=16), imagenet_norm=False)
    assert adrenal.spatial_dims == 3 and adrenal.val[0]["image"].shape == (1, 28, 28, 28)
    assert 0 <= adrenal.val[0]["image"].min() and adrenal.val[0]["image"].max() <= 1


def test_real_hippocampus(shared_data):
    bundle = load_data(_config(task="segmentation", path=str(shared_data / "msd_hippocampus"),
                               limit=4, preprocess={"crop_size": [32, 48, 32]}),
                       imagenet_norm=False)
    assert bundle.class_names == ["background", "Anterior", "Posterior"]
    item = bundle.val[0]
    assert item["image"].shape == (1, 32, 48, 32)
    assert set(item["label"].unique().tolist()) == {0, 1, 2}
    assert abs(float(item["image"].mean())) < 0.5  # per-volume z-score


def _affine_caches_grid(bundle) -> bool:
    from monai.transforms import RandAffined

    affine = [t for t in bundle.train.augment.transforms if isinstance(t, RandAffined)]
    assert len(affine) == 1
    return bool(affine[0].rand_affine.cache_grid)


def test_augmentation_keeps_per_size_work_only_where_every_item_has_one_size(tmp_path):
    lines = ["image,label"]
    for i in range(8):  # two sizes, no image_size: each item keeps its own
        write_png(tmp_path / f"i{i}.png", np.full((8, 8) if i % 2 else (10, 7), 100 + i, np.uint8))
        lines.append(f"i{i}.png,{i % 2}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    ops = {"ops": [{"name": "affine", "prob": 1.0}]}
    split = {"val_fraction": 0.25, "test_fraction": 0.25}
    mixed = load_data(_config(path=str(tmp_path), split=split, augment=ops), imagenet_norm=False)
    assert not _affine_caches_grid(mixed)
    sizes = {tuple(mixed.train[i]["image"].shape[1:]) for i in range(len(mixed.train))}
    assert sizes == {(8, 8), (10, 7)}
    resized = load_data(_config(path=str(tmp_path), split=split, augment=ops,
                                preprocess={"image_size": [9, 9]}), imagenet_norm=False)
    assert _affine_caches_grid(resized)
    assert {tuple(resized.train[i]["image"].shape[1:]) for i in range(4)} == {(9, 9)}
    seg = load_data(_config(task="segmentation", augment=ops), imagenet_norm=False)
    assert _affine_caches_grid(seg)  # training masks are checked to share one size


def _volumes_manifest(tmp_path, odd: int, odd_volume, *, task="classification", n=6):
    """A manifest of ``n`` 3D single-channel volumes (fixed splits: train, train, val, val,
    test, test) whose case ``odd`` is ``odd_volume`` instead."""
    splits = ["train", "train", "val", "val", "test", "test"]
    lines = ["image,label,split" if task == "classification" else "image,mask,split"]
    for i in range(n):
        vol = np.random.default_rng(i).random((8, 8, 8)).astype(np.float32)
        write_nifti(tmp_path / f"v{i}.nii.gz", odd_volume if i == odd else vol)
        if task == "classification":
            label = str(i % 2)
        else:
            image = np.asarray(odd_volume if i == odd else vol)
            mask = np.zeros(image.shape[:3], np.uint8)
            mask[(slice(2, 5),) * mask.ndim] = 1
            write_nifti(tmp_path / f"m{i}.nii.gz", mask)
            label = f"m{i}.nii.gz"
        lines.append(f"v{i}.nii.gz,{label},{splits[i]}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    return str(tmp_path)


@pytest.mark.parametrize("odd", [1, 5])  # a training case, a test case
def test_a_case_with_other_channels_is_refused_before_training(tmp_path, odd):
    """A 4D NIfTI (two volumes: two channels) among single-channel volumes: refused while
    the cache fills, naming the file, not a crash of the network at test time."""
    two = np.stack([np.ones((8, 8, 8), np.float32)] * 2, axis=-1)
    path = _volumes_manifest(tmp_path, odd, two)
    with pytest.raises(DataError, match=rf"v{odd}\.nii\.gz.* has 2 channels after "
                       r"preprocessing, but the first training case .*v0\.nii\.gz' has 1"):
        load_data(_config(path=path), imagenet_norm=False)


def test_a_first_case_with_other_channels_names_both_files(tmp_path):
    two = np.stack([np.ones((8, 8, 8), np.float32)] * 2, axis=-1)
    path = _volumes_manifest(tmp_path, 0, two)
    with pytest.raises(DataError, match=r"v1\.nii\.gz.* has 1 channel after preprocessing, "
                       r"but the first training case .*v0\.nii\.gz' has 2"):
        load_data(_config(path=path), imagenet_norm=False)


def test_uncached_data_refuses_the_case_before_training_too(tmp_path):
    """The checks before training read every case's header whatever the cache (before: an
    uncached run refused the case only when it first read it, after training)."""
    two = np.stack([np.ones((8, 8, 8), np.float32)] * 2, axis=-1)
    with pytest.raises(DataError, match=r"v5\.nii\.gz.* has 2 channels"):
        load_data(_config(path=_volumes_manifest(tmp_path, 5, two), cache="none"),
                  imagenet_norm=False)


def test_the_reading_of_a_case_still_refuses_other_channels(tmp_path):
    """The preprocessing chain checks each case it reads as well (a file changed after the
    checks, or a chain used without them)."""
    from medxfer.data.steps import ExpectedImages, LoadCased

    two = np.stack([np.ones((8, 8, 8), np.float32)] * 2, axis=-1)
    _volumes_manifest(tmp_path, 5, two)
    chain = LoadCased("classification", expect=ExpectedImages(3, 1, str(tmp_path / "v0.nii.gz")))
    assert chain({"image": str(tmp_path / "v1.nii.gz"), "id": "v1"})["image"].shape[0] == 1
    with pytest.raises(DataError, match=r"v5\.nii\.gz.* has 2 channels"):
        chain({"image": str(tmp_path / "v5.nii.gz"), "id": "v5"})


@pytest.mark.parametrize("augment_on", ["cpu", "batch"])
def test_channels_that_the_channel_setting_makes_equal_are_accepted(tmp_path, augment_on):
    """Grey and colour PNGs with ``channels: rgb`` all become 3 channels, with ``grey`` 1;
    a batch-augmented run adapts each item before it collates them (before: it ignored the
    setting and refused the mixed images)."""
    from torch.utils.data import default_collate

    lines = ["image,label"]
    for i in range(8):
        grey = np.full((8, 8), 20 * i, np.uint8)
        write_png(tmp_path / f"p{i}.png", np.stack([grey] * 3, -1) if i == 3 else grey)
        lines.append(f"p{i}.png,{i % 2}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    split = {"val_fraction": 0.25, "test_fraction": 0.25}
    for channels, count in (("rgb", 3), ("grey", 1)):
        bundle = load_data(_config(path=str(tmp_path), split=split, augment_on=augment_on,
                                   preprocess={"channels": channels}), imagenet_norm=True)
        assert bundle.in_channels == count
        train = bundle.train
        assert {train[i]["image"].shape[0] for i in range(len(train))} == {count}
        batch = train.finish_batch(default_collate([train.raw(i) for i in range(len(train))]))
        assert batch["image"].shape[1] == count
    with pytest.raises(DataError, match=r"p\d\.png.* has \d channels? after preprocessing"):
        load_data(_config(path=str(tmp_path), split=split, augment_on=augment_on),
                  imagenet_norm=False)


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_a_2d_image_among_3d_images_is_refused_naming_it(tmp_path, task):
    """Before: a traceback from MONAI's resize (classification) or patch sampler
    (segmentation) naming no file."""
    flat = np.random.default_rng(9).random((8, 8)).astype(np.float32)
    path = _volumes_manifest(tmp_path, 3, flat, task=task)
    extra = {"preprocess": {"image_size": [8, 8, 8]}} if task == "classification" else \
        {"patch": {"size": [4, 4, 4]}}
    with pytest.raises(DataError, match=r"v3\.nii\.gz.* is 2D among 3D images \(.*v0\.nii\.gz'"
                       r" is 3D"):
        load_data(_config(task=task, path=path, **extra), imagenet_norm=False)


def test_a_3d_image_among_2d_images_is_refused_before_the_patch_size(tmp_path):
    """With the 2D image first the dataset is 2D: the volumes are the ones named (before:
    "data.patch.size needs 2 values for 2D images"), by ``medxfer run --check`` too, which
    checks every case's header (before: it read one image and named the patch size)."""
    from medxfer.data.loading import network_inputs

    flat = np.random.default_rng(9).random((8, 8)).astype(np.float32)
    path = _volumes_manifest(tmp_path, 0, flat, task="segmentation")
    config = _config(task="segmentation", path=path, patch={"size": [4, 4, 4]})
    with pytest.raises(DataError, match=r"v1\.nii\.gz.* is 3D among 2D images \(.*v0\.nii\.gz'"
                       r" is 2D"):
        load_data(config, imagenet_norm=False)
    with pytest.raises(DataError, match=r"v1\.nii\.gz.* is 3D among 2D images"):
        network_inputs(config, imagenet_norm=False)


def test_inference_transform_on_a_folder_of_two_series_says_to_give_one_series(tmp_path,
                                                                               tiny_volume):
    """predict has no series_uid option: the hint is a folder that holds one series."""
    from tests.data.datafiles import write_dicom_series

    write_dicom_series(tmp_path / "two", tiny_volume, series_uid="1.2.3.4.100")
    write_dicom_series(tmp_path / "two", tiny_volume[:3], series_uid="1.2.3.4.200")
    fn = inference_transform(_config(), imagenet_norm=False, spatial_dims=3)
    with pytest.raises(DataError, match="holds 2 DICOM series") as exc:
        fn(tmp_path / "two")
    assert "give a folder that holds one series" in str(exc.value)
    assert "series_uid" not in str(exc.value)
