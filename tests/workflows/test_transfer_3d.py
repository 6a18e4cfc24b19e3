"""3D transfer end to end on a tiny fake 3D MedMNIST file: ``model.backbone.to_3d`` in
runs and prediction, ``medxfer pretrain --ssl`` as a hash-checked transfer source, the
refusals, and ``medxfer compare`` arms (``LABEL=BACKBONE``) for a transfer-source study."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import medxfer  # noqa: E402
from medxfer.cli import main  # noqa: E402
from medxfer.config import load_config  # noqa: E402
from medxfer.errors import CheckpointError, ConfigError  # noqa: E402
from medxfer.models.to_3d import Converted3dBackbone, SliceBackbone  # noqa: E402
from medxfer.tasks.backbone_build import create_backbone  # noqa: E402
from medxfer.training.checkpoints import load_model_weights  # noqa: E402
from medxfer.weights import TRANSFER_SOURCE_JSON, sha256_of  # noqa: E402
from medxfer.weights_lookup import offline_package_file  # noqa: E402
from medxfer.workflows.compare import (  # noqa: E402
    Cell,
    cell_config,
    plan_grid,
    split_arms,
    with_backbone,
)
from medxfer.workflows.predict import load_run  # noqa: E402
from medxfer.workflows.run import run_pipeline  # noqa: E402
from medxfer.workflows.ssl_pretrain import ssl_pretrain  # noqa: E402

REGISTRIES = medxfer.build_registries(medxfer.create_plugin_manager())
#: A small 2D backbone that also builds 3D: cheap to convert and train.
TINY = ["model.backbone.name=basic_cnn", "model.backbone.channels=[4,8]",
        "model.backbone.pretrained=none", "train.epochs=1", "train.batch_size=8",
        "eval.bootstrap=0", "train.threads=1"]


def fake_medmnist_3d(path: Path, *, size: int = 12, seed: int = 0,
                     labels_seed: int | None = None) -> Path:
    """A tiny 3D MedMNIST-like file: class 1 has a bright cube (``labels_seed`` shuffles
    the training labels, images unchanged)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", 24), ("val", 8), ("test", 8)):
        labels = np.arange(count) % 2
        images = rng.integers(40, 120, (count, size, size, size)).astype(np.uint8)
        images[labels == 1, 3:9, 3:9, 3:9] += 100
        if labels_seed is not None and split == "train":
            labels = np.random.default_rng(labels_seed).permutation(labels)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    return fake_medmnist_3d(tmp_path_factory.mktemp("data") / "fake3d.npz")


def tiny(data: Path, *extra: str):
    return load_config(None, [f"data.path={data}", *TINY, *extra])


@pytest.fixture(scope="module")
def ssl_source(tmp_path_factory, volumes) -> Path:
    out = tmp_path_factory.mktemp("ssl") / "genesis"
    ssl_pretrain(tiny(volumes, "model.backbone.to_3d=i3d"), "genesis", out,
                 registries=REGISTRIES)
    return out


def backbone_for(config, in_channels: int = 1):
    entry = REGISTRIES.backbone.get(config.model.backbone.name)
    return create_backbone(config, REGISTRIES, entry, {
        "in_channels": in_channels, "spatial_dims": 3, **config.model.backbone.kwargs})


@pytest.mark.slow
@pytest.mark.parametrize("method,kind", [("i3d", Converted3dBackbone),
                                         ("2.5d", SliceBackbone)])
def test_a_converted_run_trains_and_predicts(tmp_path, volumes, method, kind) -> None:
    run_dir = tmp_path / "run"
    summary = run_pipeline(tiny(volumes, f"model.backbone.to_3d={method}"), run_dir,
                           registries=REGISTRIES, progress=False)
    assert summary["test"]["auc"] >= 0
    sidecar = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))
    assert sidecar["backbone"]["to_3d"] == method and sidecar["spatial_dims"] == 3
    loaded = load_run(run_dir, registries=REGISTRIES)
    assert isinstance(loaded.model.backbone, kind)
    with torch.no_grad():
        assert loaded.model(torch.randn(2, 1, 12, 12, 12)).shape == (2, 2)


@pytest.mark.slow
def test_ssl_source_is_hash_checked_and_seeds_the_same_conversion(ssl_source) -> None:
    record = json.loads((ssl_source / TRANSFER_SOURCE_JSON).read_text(encoding="utf-8"))
    assert record["task"] == "ssl" and record["ssl"]["labels_used"] is False
    assert record["sha256"] == sha256_of(ssl_source / record["checkpoint"])
    backbone = backbone_for(tiny(Path("unused"), "model.backbone.to_3d=i3d",
                                 f"model.backbone.pretrained={ssl_source}"))
    assert backbone.load_report.source == f"run:{ssl_source}"
    saved = load_model_weights(ssl_source / "model.safetensors")
    for name, tensor in backbone.body.state_dict().items():
        assert torch.equal(tensor, saved[f"backbone.body.{name}"]), name
    with pytest.raises(ConfigError, match="to_3d: i3d"):
        backbone_for(tiny(Path("unused"), "model.backbone.to_3d=acs",
                          f"model.backbone.pretrained={ssl_source}"))


@pytest.mark.slow
def test_a_changed_ssl_checkpoint_is_refused(tmp_path, ssl_source) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in ssl_source.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    weights = load_model_weights(copy / "model.safetensors")
    weights = {k: v + 1 if k.endswith("0.conv.weight") else v for k, v in weights.items()}
    from safetensors.torch import save_file
    save_file(weights, str(copy / "model.safetensors"))
    with pytest.raises(CheckpointError, match="changed since"):
        backbone_for(tiny(Path("unused"), "model.backbone.to_3d=i3d",
                          f"model.backbone.pretrained={copy}"))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["contrastive", "genesis"])
def test_ssl_never_reads_the_labels(tmp_path, method) -> None:
    """The same images with shuffled labels give the same pretrained weights."""
    weights = []
    for labels_seed in (None, 1):
        data = fake_medmnist_3d(tmp_path / f"d{labels_seed}.npz", labels_seed=labels_seed)
        out = tmp_path / f"{method}{labels_seed}"
        config = tiny(data, "train.deterministic=true")
        record = ssl_pretrain(config, method, out, registries=REGISTRIES)
        assert record["ssl"]["train_images"] == 24 and np.isfinite(record["ssl"]["final_loss"])
        weights.append(load_model_weights(out / "model.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_to_3d_refusals(volumes) -> None:
    two_d = tiny(volumes, "model.backbone.to_3d=i3d")
    entry = REGISTRIES.backbone.get("basic_cnn")
    with pytest.raises(ConfigError, match="the data is 2D"):
        create_backbone(two_d, REGISTRIES, entry, {"in_channels": 1, "spatial_dims": 2})
    with pytest.raises(ConfigError, match="builds no 2D network"):
        backbone_for(load_config(None, [f"data.path={volumes}", "model.backbone.name=resnet10_3d",
                                        "model.backbone.to_3d=i3d"]))
    with pytest.raises(ConfigError, match="channels_last"):
        backbone_for(tiny(volumes, "model.backbone.to_3d=acs", "train.channels_last=true"))


def test_the_config_keeps_to_3d_out_of_the_factorys_options(volumes) -> None:
    config = tiny(volumes, "model.backbone.to_3d=2.5d")
    assert config.model.backbone.to_3d == "2.5d"
    assert "to_3d" not in config.model.backbone.kwargs
    assert "to_3d" not in tiny(volumes).model.backbone.model_dump()
    with pytest.raises(ConfigError, match="'acs', 'i3d' or '2.5d'"):
        tiny(volumes, "model.backbone.to_3d=3d")


@pytest.mark.skipif(offline_package_file("mobilenet_v2-b0353104.pth") is None,
                    reason="torchvision's ImageNet MobileNet-V2 is not installed offline")
def test_compare_arms_run_one_backbone_several_ways(tmp_path, volumes) -> None:
    assert split_arms(["lenet", "acs=basic_cnn"]) == (["lenet", "acs"], {"acs": "basic_cnn"})
    for bad in (["a/b=lenet"], ["x=lenet", "x=basic_cnn"], ["x__y=lenet"], ["x="]):
        with pytest.raises(ConfigError, match="--backbones"):
            split_arms(bad)
    base = load_config(None, [f"data.path={volumes}", "model.backbone.to_3d=i3d",
                              "train.epochs=1", "eval.bootstrap=0"])
    assert with_backbone(base, "mobilenet_v2").model.backbone.to_3d == "i3d"  # its own option
    assert with_backbone(base, "lenet").model.backbone.to_3d is None
    grid = plan_grid(base, tmp_path / "grid", ["i3d=mobilenet_v2", "slices=mobilenet_v2",
                                               "scratch=mobilenet_v2"],
                     ["full_finetune"], 1, registries=REGISTRIES,
                     backbone_sets={"slices": ["model.backbone.to_3d=2.5d"],
                                    "scratch": ["strategy.name=scratch"]})
    assert [c.name for c in grid.cells] == ["i3d__full_finetune__seed0",
                                            "slices__full_finetune__seed0",
                                            "scratch__full_finetune__seed0"]
    assert grid.definition()["arms"] == {"i3d": "mobilenet_v2", "slices": "mobilenet_v2",
                                         "scratch": "mobilenet_v2"}
    configs = {c.backbone: cell_config(grid, c, REGISTRIES) for c in grid.cells}
    assert configs["slices"].model.backbone.to_3d == "2.5d"
    assert configs["i3d"].model.backbone.to_3d == "i3d"
    assert configs["scratch"].strategy.name == "scratch"
    assert {c.model.backbone.name for c in configs.values()} == {"mobilenet_v2"}


def test_the_row_names_the_strategy_its_cells_ran() -> None:
    from medxfer.workflows.compare_summary import _strategy_run

    cells = [(Cell("a", "full_finetune", k), Path("."), {"strategy": {"name": "scratch"}})
             for k in range(2)]
    assert _strategy_run(cells, "full_finetune") == "scratch"
    assert _strategy_run([], "full_finetune") == "full_finetune"


@pytest.mark.slow
def test_pretrain_ssl_cli_takes_the_data_itself(tmp_path, volumes) -> None:
    out = tmp_path / "ssl"
    code = main(["pretrain", "--ssl", "contrastive", str(volumes), "--output", str(out),
                 *[arg for item in TINY for arg in ("--set", item)]])
    assert code == 0
    record = json.loads((out / TRANSFER_SOURCE_JSON).read_text(encoding="utf-8"))
    assert record["ssl"]["method"] == "contrastive" and record["data"] == str(volumes)
    assert main(["pretrain", "--ssl", "rotation", str(volumes), "--output",
                 str(tmp_path / "other")]) != 0
