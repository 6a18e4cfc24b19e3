"""Every config in configs/ loads, names registered plugins, and points at its data."""

from __future__ import annotations

from pathlib import Path

import pytest

import medxfer
from medxfer.config import load_config
from medxfer.plugins import check_plugin_specs

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
REGISTRIES = medxfer.build_registries(medxfer.create_plugin_manager())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_is_valid(path):
    config = load_config(path)
    check_plugin_specs(config.plugin_specs(), REGISTRIES)
    if config.data.augment_on == "batch":  # every op must have a batch form
        from medxfer.data.augment import resolve_ops
        from medxfer.data.batch_augment import BatchAugmentation

        dims = 3 if "3d" in path.stem and config.data.slice_axis is None else 2
        BatchAugmentation(resolve_ops(config.data.augment.preset, config.data.augment.ops),
                          spatial_dims=dims, segmentation=config.task == "segmentation",
                          spatial_size=None)
    if config.data.split.file:
        assert Path(config.data.split.file).is_file(), config.data.split.file
    if config.data.path and "shared" in Path(config.data.path).parts \
            and not Path(config.data.path).exists():
        pytest.skip(f"{config.data.path} is absent (../shared/data not available)")
    if config.data.path:
        assert Path(config.data.path).exists(), config.data.path


def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"pneumoniamnist", "breastmnist", "adrenalmnist3d", "hippocampus_3d",
            "hippocampus_2d", "sample_segmentation_3d", "sample_segmentation_2d"} <= names
