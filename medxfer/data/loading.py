"""``load_data``: from a run config to train/val/test datasets; ``inference_transform``.

The cases a run uses (read, split, checked) come from :mod:`medxfer.data.run_cases`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from medxfer.data.augment import build_augmentation, resolve_ops
from medxfer.data.cache import CacheBudget, local_processes
from medxfer.data.cache import report as report_cache
from medxfer.data.batch_augment import BatchAugmentation
from medxfer.data.cases import read_case
from medxfer.data.datalist import Datalist
from medxfer.data.datasets import ArrayCases, CaseDataset, SliceCases, cached_dataset, unwrap_errors
from medxfer.data.layouts import build_datalist, detect_format
from medxfer.data.preprocess import preprocess_transform
from medxfer.data.readers import read_image
from medxfer.data.run_cases import checked_cases, load_datalist
from medxfer.data.splits import SPLITS
from medxfer.data.steps import ExpectedImages
from medxfer.data.transforms import AdaptChannels
from medxfer.errors import DataError
from medxfer.tasks import task_of

if TYPE_CHECKING:
    from medxfer.config import RunConfig
    from medxfer.data.steps import ExpectedImages


#: How the data cache's lines name the splits.
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


@dataclass
class DataBundle:
    """Everything the trainer needs from the data layer.

    Items of ``train``/``val``/``test`` are ``{"image": float32 [C, *spatial], "label": ...,
    "id": str}``; the label is an int64 scalar (classification), a float32 scalar
    (regression) or an int64 ``[1, *spatial]`` mask (segmentation). ``class_order`` says
    where the order of ``class_names`` comes from (see
    :attr:`medxfer.data.datalist.Datalist.class_order`).
    """

    task: str
    spatial_dims: int
    in_channels: int
    num_classes: int
    class_names: list[str]
    train: Dataset
    val: Dataset
    test: Dataset
    train_labels: list[int] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""
    class_order: str = ""


@dataclass
class NetworkInputs:
    """What the run's network is built for and trained on (see :func:`network_inputs`)."""

    spatial_dims: int
    in_channels: int
    num_classes: int
    input_size: list[int]


def network_inputs(config: RunConfig, *, imagenet_norm: bool) -> NetworkInputs:
    """The dimensions, channels, classes and training input size of the run's network, as
    :func:`load_data` gives them, from the datalist and one preprocessed image only.

    The cases are split (so the split settings are checked) and the augmentation is built
    (so its ops are checked against the data). Nothing is cached, so long work (a ``medxfer compare`` grid, ``medxfer run --check``)
    can build its networks before it starts.

    Raises:
        DataError: when the data cannot be read or has no labels for the task.
        ConfigError: for invalid augmentation ops.
    """
    data = config.data
    dl = load_datalist(config)
    if not dl.cases:
        raise DataError(f"{dl.describe()} has no cases")
    cases = checked_cases(dl, config)  # the split settings (and data.split.file), every case
    case = next((c for c in cases if c["split"] == "train"), cases[0])
    spatial_dims, bases = _bases(config, dl, {"train": [case], "val": [], "test": []},
                                 imagenet_norm=imagenet_norm, cache="none", cache_dir=None)
    first = _first_image(bases["train"])
    model_dims, size = _model_geometry(config, spatial_dims, first)
    _augmentations(config, dl, model_dims, size, source=str(case["image"]))
    task = task_of(config)
    return NetworkInputs(
        spatial_dims=model_dims,
        in_channels=AdaptChannels(data.preprocess.channels, imagenet_norm).out_channels(
            int(first.shape[0])),
        num_classes=task.output_channels(dl.class_names),
        input_size=list(data.patch.size) if task.labels_are_masks and data.patch.size
        else size)


def _bases(config: RunConfig, dl: Datalist, by_split: dict[str, list[dict[str, Any]]], *,
           imagenet_norm: bool, cache: str, cache_dir: Path | None) -> tuple[int, dict]:
    """The data's spatial dimensions and the preprocessed (not augmented) dataset of each
    split."""
    pre = config.data.preprocess
    if dl.medmnist is not None:
        mode = "uint8" if pre.intensity == "auto" else pre.intensity
        return dl.medmnist.spatial_dims, {s: _medmnist_base(dl, by_split[s], mode, pre)
                                          for s in SPLITS}
    first = by_split["train"][0]
    image = read_case(first)
    spatial_dims = dl.spatial_dims or image.spatial_dims
    masks = task_of(config).labels_are_masks
    transform = preprocess_transform(pre, task=config.task, spatial_dims=spatial_dims,
                                     num_classes=len(dl.class_names) if masks else 2,
                                     imagenet_norm=imagenet_norm, modality=dl.modality,
                                     expect=_expected_images(config, image, spatial_dims))
    key = {"preprocess": pre.model_dump(), "task": config.task, "imagenet": imagenet_norm,
           "classes": dl.class_names, "modality": dl.modality}
    budget = CacheBudget.from_setting(config.data.cache_memory, processes=local_processes()) \
        if cache == "auto" else None
    bases = {s: cached_dataset(by_split[s], transform, cache=cache, cache_dir=cache_dir,
                               key=key, budget=budget, label=SPLIT_NAMES[s]) for s in SPLITS}
    if budget is not None:
        report_cache(budget)
    return spatial_dims, bases


def _expected_images(config: RunConfig, first: Any, spatial_dims: int) -> ExpectedImages:
    """What every case's image must match: the dataset's dimensionality and the channels of
    the first training case (``first``, as read), compared after ``data.preprocess.channels``
    (a batch-augmented run adapts each item's channels before it collates them)."""
    channels = config.data.preprocess.channels
    hint = "" if channels == "grey" else \
        ", or set data.preprocess.channels: grey to average each image's channels to one"
    return ExpectedImages(spatial_dims=spatial_dims, channels=int(first.array.shape[0]),
                          source=str(first.path), adapt=channels, hint=hint)


def _first_image(base: Dataset) -> torch.Tensor:
    try:
        return base[0]["image"]
    except RuntimeError as exc:
        raise unwrap_errors(exc) from None


def _model_geometry(config: RunConfig, spatial_dims: int,
                    first: torch.Tensor) -> tuple[int, list[int]]:
    """The network's spatial dimensions and the training items' size (``data.slice_axis``
    makes 2D slices of volumes)."""
    data, size = config.data, list(first.shape[1:])
    if data.slice_axis is None:
        return spatial_dims, size
    if not task_of(config).labels_are_masks or spatial_dims != 3:
        raise DataError("data.slice_axis slices 3D volumes for a 2D segmentation network; "
                        f"this is {spatial_dims}D {config.task} data: set it to null")
    return 2, [s for a, s in enumerate(size) if a != data.slice_axis]


def _augmentations(config: RunConfig, dl: Datalist, model_dims: int, size: list[int],
                   source: str = "") -> tuple[Any, BatchAugmentation | None]:
    """The per-item augmentation and, with ``data.augment_on: batch``, the batch one
    (``source``: the first training case's image, named when the patch size does not fit).

    Raises:
        ConfigError: for invalid augmentation ops (naming the op).
    """
    data, pre = config.data, config.data.preprocess
    seg = task_of(config).labels_are_masks
    ops, batch_augment = resolve_ops(data.augment.preset, data.augment.ops), None
    if data.augment_on == "batch":  # per item only the patch draw; the ops act on batches
        patch = data.patch if seg and data.patch.size else None
        batch_augment = BatchAugmentation(ops, spatial_dims=model_dims, segmentation=seg,
                                          spatial_size=list(patch.size) if patch else size,
                                          seed=config.train.seed)
        ops = []
    # every training item has one size: one array, a resize or crop to one size, or
    # segmentation masks checked to share one size
    fixed_size = (dl.medmnist is not None or bool(pre.image_size) or bool(pre.crop_size)
                  or (seg and data.slice_axis is None))
    augment = build_augmentation(data.augment.preset, ops, spatial_dims=model_dims,
                                 segmentation=seg, spatial_size=size, seed=config.train.seed,
                                 patch=data.patch if seg else None, fixed_size=fixed_size,
                                 source=source)
    return augment, batch_augment


def load_data(config: RunConfig, *, imagenet_norm: bool,
              cache_dir: Path | None = None) -> DataBundle:
    """Read, split, preprocess and (for training) augment the data of a run.

    Args:
        config: The run config (``task``, ``data``, ``train.seed``).
        imagenet_norm: Apply ImageNet mean/std (the backbone's weights expect it).
        cache_dir: Folder for ``data.cache: disk`` (the run folder's ``cache/``).

    Returns:
        The datasets and what the model needs to know about them.

    Raises:
        DataError: for unreadable or inconsistent data (the message names the file).
        ConfigError: for invalid augmentation ops or a disk cache without a folder.
    """
    data, pre = config.data, config.data.preprocess
    dl = load_datalist(config)
    cases = checked_cases(dl, config)
    by_split = {s: [c for c in cases if c["split"] == s] for s in SPLITS}
    task = task_of(config)
    spatial_dims, bases = _bases(config, dl, by_split, imagenet_norm=imagenet_norm,
                                 cache=data.cache, cache_dir=cache_dir)
    first = _first_image(bases["train"])
    adapt = AdaptChannels(pre.channels, imagenet_norm)
    model_dims, size = _model_geometry(config, spatial_dims, first)
    train_base = bases["train"]
    if data.slice_axis is not None:
        train_base = SliceCases(bases["train"], axis=data.slice_axis)
    augment, batch_augment = _augmentations(config, dl, model_dims, size,
                                            source=str(by_split["train"][0]["image"]))
    if task.labels_are_masks:
        _check_training_masks(bases["train"], by_split["train"],
                              same_size=not data.patch.size and data.slice_axis is None)
    datasets = {s: CaseDataset(train_base if s == "train" else bases[s], task=config.task,
                               adapt=adapt, augment=augment if s == "train" else None,
                               seed=config.train.seed,
                               batch_augment=batch_augment if s == "train" else None)
                for s in SPLITS}
    counts = ", ".join(f"{s} {len(by_split[s])}" for s in SPLITS)
    return DataBundle(
        task=config.task, spatial_dims=model_dims,
        in_channels=adapt.out_channels(int(first.shape[0])),
        num_classes=task.output_channels(dl.class_names),
        class_names=list(dl.class_names), train=datasets["train"], val=datasets["val"],
        test=datasets["test"],
        train_labels=[int(c["label"]) for c in by_split["train"]]
        if task.labels_are_classes else [],
        cases=[{"id": c["id"], "split": c["split"], "patient_id": c.get("patient_id"),
                "image": c["image"], "label": c["label"]} for s in SPLITS for c in by_split[s]],
        source=f"{dl.describe()}; {counts}", class_order=dl.class_order)


def _check_training_masks(base: Dataset, cases: list[dict[str, Any]], *,
                          same_size: bool) -> None:
    """Segmentation training data checks on the preprocessed cases.

    At least one training mask must hold foreground; and whole-image training (no
    ``data.patch.size``) batches images, so they must share one size.

    Raises:
        DataError: naming the files and what to change.
    """
    first_size: list[int] | None = None
    first_case: dict[str, Any] = {}
    any_foreground = False
    for index, case in enumerate(cases):
        try:
            item = base[index]
        except RuntimeError as exc:
            raise unwrap_errors(exc) from None
        any_foreground = any_foreground or bool((item["label"] > 0).any())
        size = list(item["image"].shape[1:])
        if first_size is None:
            first_size, first_case = size, case
        elif same_size and size != first_size:
            raise DataError(
                f"training images differ in size after preprocessing ({first_case['image']!r} is "
                f"{first_size}, {case['image']!r} is {size}); set data.patch.size to train on "
                "patches, or data.preprocess.crop_size / image_size to give them one size")
    if cases and not any_foreground:
        raise DataError(
            f"every training mask is empty (all background), e.g. {cases[0]['label']!r}: "
            "nothing to learn; check the label files and data.label_key")


def _medmnist_base(dl: Datalist, cases: list[dict[str, Any]], mode: str, pre: Any) -> ArrayCases:
    assert dl.medmnist is not None
    refs = [c["image"].rsplit("#", 1)[1].split("/") for c in cases]
    images = np.stack([dl.medmnist.images[s][int(i)] for s, i in refs]) if refs else \
        dl.medmnist.images["train"][:0]
    size = pre.image_size
    if size and len(size) != dl.medmnist.spatial_dims:
        raise DataError(f"data.preprocess.image_size {size} needs {dl.medmnist.spatial_dims} "
                        f"values for {dl.medmnist.name}")
    return ArrayCases(images, [c["label"] for c in cases], [c["id"] for c in cases],
                      intensity=mode, image_size=size, ct_window=pre.ct_window,
                      percentiles=pre.percentiles)


def inference_transform(config: RunConfig, *, imagenet_norm: bool, spatial_dims: int,
                        in_channels: int | None = None) -> Callable[[str | Path], torch.Tensor]:
    """A function from an image file to a tensor preprocessed exactly like evaluation data.

    Args:
        config: The run config the model was trained with.
        imagenet_norm: Whether the run applied ImageNet mean/std.
        spatial_dims: 2 or 3: the model's input dimensionality.
        in_channels: The model's input channels. A colour image given to a model trained
            on grey ones is converted to grey (ITU-R 601 luma, as ``channels: grey`` does),
            a grey one given to a colour model is repeated to RGB; other mismatches raise.

    Returns:
        ``f(path) -> float32 tensor [C, *spatial]``; it raises :class:`DataError` for an
        unreadable file, one of the wrong dimensionality or channels it cannot convert.
    """
    modality, medmnist = _dataset_hints(config)
    pre = _for_new_images(config.data.preprocess, medmnist)
    chain = preprocess_transform(pre, task="classification", spatial_dims=spatial_dims,
                                 num_classes=2, imagenet_norm=imagenet_norm, modality=modality)
    adapt = AdaptChannels(pre.channels, imagenet_norm)

    def transform(path: str | Path) -> torch.Tensor:
        path = Path(path)
        image = read_image(path)
        if image.spatial_dims != spatial_dims:
            hint = ("give volumes (NIfTI, NRRD/MHA or a DICOM series folder)" if spatial_dims == 3
                    else "give 2D images (PNG/JPEG/TIFF, or a single-frame DICOM file)")
            raise DataError(f"{str(path)!r} is a {image.spatial_dims}D image but the model takes "
                            f"{spatial_dims}D input: {hint}, or predict with a run trained on "
                            f"{image.spatial_dims}D images")
        try:
            tensor = chain({"image": str(path), "id": path.name})["image"]
        except RuntimeError as exc:
            raise unwrap_errors(exc) from None
        if in_channels is not None and adapt.out_channels(tensor.shape[0]) != in_channels:
            tensor = _match_channels(tensor, in_channels, path)
        return adapt(tensor)

    return transform


def inference_preprocess(config: RunConfig) -> Any:
    """``data.preprocess`` as new images get it: MedMNIST's ``auto`` intensity is ``uint8``
    (its arrays are uint8 whatever file a new image comes in)."""
    return _for_new_images(config.data.preprocess, _dataset_hints(config)[1])


def _for_new_images(pre: Any, medmnist: bool) -> Any:
    return pre.model_copy(update={"intensity": "uint8"}) \
        if medmnist and pre.intensity == "auto" else pre


def _match_channels(image: torch.Tensor, channels: int, path: Path) -> torch.Tensor:
    """``image`` ``[C, *spatial]`` converted to the ``channels`` a model was trained on:
    colour to grey or grey to RGB; anything else is an error naming the file."""
    have = int(image.shape[0])
    if have == 3 and channels == 1:
        return AdaptChannels("grey")(image)
    if have == 1 and channels == 3:
        return AdaptChannels("rgb")(image)
    raise DataError(f"{str(path)!r} has {have} channel{'s' if have != 1 else ''} but the model "
                    f"was trained on {channels}-channel images; give images like the training "
                    "data's")


def _dataset_hints(config: RunConfig) -> tuple[str | None, bool]:
    """Dataset-level modality and whether the training data was MedMNIST."""
    if not config.data.path:
        return None, False
    try:
        path = Path(config.data.path)
        fmt = config.data.format if config.data.format != "auto" else detect_format(path)
        if fmt in ("msd", "nnunet", "packed"):  # the layouts that declare a modality
            return build_datalist(path, format=fmt).modality, False
        return None, fmt == "medmnist"
    except DataError:
        return None, str(config.data.path).endswith(".npz")
