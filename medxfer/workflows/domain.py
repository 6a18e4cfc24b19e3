"""Domain adaptation in a run: target data, the method's plugin, target evaluation and
the source-vs-target feature figure. The pipeline calls these; none names a method."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from medxfer.config import RunConfig
from medxfer.data import load_data
from medxfer.data.datalist import IMPLICIT_CLASS_ORDERS
from medxfer.errors import ConfigError, DataError
from medxfer.plugin_kit import attributes as plugin_attributes
from medxfer.tasks import task_of
from medxfer.training import distributed as D
from medxfer.training.loaders import make_loader

#: Features kept per domain for the PCA figure and ``features.npz``.


class ClassOrderWarning(UserWarning):
    """Numbered target labels are read in a source class order that nobody declared."""


class WithoutLabels(Dataset):
    """A dataset whose items lose their ``label``: unlabelled target training data."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return _without_label(self.dataset[index])

    @property
    def batch_augment(self) -> Any:
        """The wrapped dataset's batch augmentation (``data.augment_on: batch``), if any."""
        return getattr(self.dataset, "batch_augment", None)

    def raw(self, index: int) -> Any:
        """The wrapped dataset's raw item, without its label."""
        return _without_label(self.dataset.raw(index))

    def finish_batch(self, batch: dict[str, Any], device: torch.device | None = None) -> Any:
        """The wrapped dataset's batch augmentation and channel adaptation."""
        return self.dataset.finish_batch(batch, device)


def _without_label(item: Any) -> Any:
    if isinstance(item, (list, tuple)):  # segmentation patches drawn from one case
        return [{k: v for k, v in patch.items() if k != "label"} for patch in item]
    return {k: v for k, v in dict(item).items() if k != "label"}


def create_method(config: RunConfig, registries: Any) -> Any:
    """The run's domain-adaptation plugin object, or ``None`` when ``domain_adaptation`` is null.

    Raises:
        ConfigError: for an unknown method, bad options, or a method without target data.
    """
    spec = config.domain_adaptation
    if spec is None:
        return None
    if config.data.target is None:
        raise ConfigError(f"domain_adaptation: {spec.name!r} needs target-domain data; set "
                          "data.target.path (e.g. a shifted copy made by `medxfer data shift`)")
    return registries.domain_adaptation.create(spec.name, key="domain_adaptation", **spec.kwargs)


def describe_method(method: Any, config: RunConfig) -> dict[str, Any]:
    """The method's ``describe()``, or its config spec when it has none."""
    described = plugin_attributes.describe_plugin(method)
    if described is not None:
        return described
    return config.domain_adaptation.model_dump() if config.domain_adaptation else {}


def restore_structure(config: RunConfig, registries: Any, model: torch.nn.Module) -> None:
    """Give a freshly built network the layers the run's domain-adaptation method added
    (its optional ``restore_structure(model)``), so that the saved weights fit it.

    The network then runs in the ``source`` domain; ``medxfer.models.set_domain`` switches.
    """
    spec = config.domain_adaptation
    method = registries.domain_adaptation.create(spec.name, key="domain_adaptation",
                                                 **spec.kwargs)
    plugin_attributes.restore_network_structure(method, model)


def target_config(config: RunConfig) -> RunConfig:
    """The run config with ``data.target`` as its data (same preprocessing, its own split)."""
    target = config.data.target
    assert target is not None
    data = config.data.model_copy(deep=True)
    data.path, data.format, data.limit, data.target = target.path, target.format, target.limit, None
    data.split.file = None
    return config.model_copy(update={"data": data})


def load_target_data(config: RunConfig, source: Any, *, imagenet_norm: bool,
                     cache_dir: Path) -> Any:
    """Read and preprocess ``data.target`` like the source data.

    The target's labels must mean what the source's mean. Classes that are the source's
    in another order (a class folder is read alphabetically, a manifest in its own order),
    or numbered ``0 .. C-1``, are given the source's label order; other names are refused.
    Declaring ``data.classes`` names both alike. Numbered target labels read in an order
    the source only has by sorting its names (class folders, a manifest's label names
    without ``classes.txt``) give a :class:`ClassOrderWarning` (rank 0 only).

    Raises:
        DataError: when the target data cannot be read or does not match the source
            (channels, dimensions, classes).
    """
    where = f"data.target.path {config.data.target.path!r}"
    target = target_config(config)
    try:
        bundle = load_data(target, imagenet_norm=imagenet_norm, cache_dir=cache_dir)
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None
    for attr in ("spatial_dims", "in_channels", "num_classes"):
        if getattr(bundle, attr) != getattr(source, attr):
            raise DataError(
                f"{where}: the target data has {attr} {getattr(bundle, attr)} but the source "
                f"has {getattr(source, attr)}; source and target must be the same kind of images "
                "with the same classes")
    names, wanted = list(bundle.class_names), list(source.class_names)
    if names == wanted:
        return bundle
    refused = DataError(
        f"{where}: the target's classes {names} are not the source's {wanted}, so its labels "
        "would be read as other classes. Name the target's classes as the source's, or, "
        "where they mean the same under other names, declare data.classes (the names in "
        "label order) to use them for both")
    if not task_of(config).labels_are_classes:  # masks keep their values' meaning
        raise refused
    data = target.data.model_copy(update={"classes": wanted})
    try:  # the source's label order, by name (or by number)
        bundle = load_data(target.model_copy(update={"data": data}),
                           imagenet_norm=imagenet_norm, cache_dir=cache_dir)
    except DataError:
        raise refused from None
    numbered = [name for name in names if name not in wanted and name.isdigit()]
    implicit = IMPLICIT_CLASS_ORDERS.get(getattr(source, "class_order", ""))
    if numbered and implicit and D.is_main():
        as_read = ", ".join(f"{i}={name}" for i, name in enumerate(wanted))
        warnings.warn(
            f"{where}: the target's numbered labels are read as {as_read} (the source's "
            f"class order, taken from {implicit}). If the numbers mean other classes, "
            "declare data.classes: [...] with the class names in the order the numbers "
            "mean (it orders the source's classes too), or label the target with the "
            "class names", ClassOrderWarning, stacklevel=2)
    return bundle


def target_train_loader(config: RunConfig, target: Any, device: torch.device) -> Any:
    """The target training loader; without labels unless ``data.target.labelled``."""
    dataset = target.train if config.data.target.labelled else WithoutLabels(target.train)
    return make_loader(dataset, config, train=True, device=device)
