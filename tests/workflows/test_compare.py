"""`medxfer compare` and `medxfer pretrain` on the embedded sample data.

One small grid (basic_cnn and lenet x feature_extraction and scratch x 2 seeds, each backbone
pretrained first on the same sample data) is run once per module through the CLI, one
epoch per run; the other tests check its outputs, resuming, and the refusals.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from medxfer.cli import main
from medxfer.config import load_config
from medxfer.workflows.compare import cell_state, parse_names, plan_grid, with_backbone
from medxfer.workflows.compare_summary import mean_std_ci
from medxfer.workflows.pretrain import pretrain
from medxfer.errors import CheckpointError, ConfigError
from medxfer.weights import TRANSFER_SOURCE_JSON

QUICK = ["data.limit=20", "data.split.test_fraction=0.1", "train.epochs=1",
         "eval.bootstrap=0", "train.batch_size=8"]
SETS = [arg for item in QUICK for arg in ("--set", item)]
PRE_SETS = [arg for item in QUICK for arg in ("--pretrain-set", item)]
GRID_ARGS = ["--backbones", "basic_cnn,lenet", "--strategies", "feature_extraction,scratch",
             "--seeds", "2"]
CELLS = [f"{b}__{s}__seed{k}" for b in ("basic_cnn", "lenet")
         for s in ("feature_extraction", "scratch") for k in (0, 1)]


@pytest.fixture(scope="module")
def source_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "source.yaml"
    path.write_text("task: classification\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory, source_config) -> Path:
    out = tmp_path_factory.mktemp("study") / "grid"
    code = main(["compare", str(source_config), *GRID_ARGS, "--output", str(out),
                 "--pretrain", str(source_config), *PRE_SETS, *SETS])
    assert code == 0
    return out


@pytest.mark.slow
def test_compare_writes_tables_figures_and_every_run(study):
    for name in ("comparison.md", "comparison.csv", "comparison.json", "compare.json",
                 "figures/primary_bars.png", "figures/metrics_grouped.png",
                 "figures/heatmap.png", "figures/confusion_grid.png", "ensemble/ensemble.json"):
        assert (study / name).is_file(), name
    for cell in CELLS:
        assert (study / "runs" / cell / "metrics.json").is_file(), cell
    summary = json.loads((study / "comparison.json").read_text(encoding="utf-8"))
    models = [row["model"] for row in summary["rows"]]
    assert models[:4] == ["basic_cnn / feature_extraction", "basic_cnn / scratch",
                          "lenet / feature_extraction", "lenet / scratch"]
    assert models[4].startswith("ensemble (mean, ")
    for row in summary["rows"][:4]:
        acc = row["metrics"]["accuracy"]
        assert len(acc["values"]) == 2 and acc["n"] == 2
        assert acc["mean"] == pytest.approx(sum(acc["values"]) / 2)
        assert acc["ci95"][0] <= acc["mean"] <= acc["ci95"][1]
        n_test = json.loads((Path(row["runs"][0]) / "metrics.json").read_text(encoding="utf-8"))["test"]["n"]
        assert sum(map(sum, row["confusion_matrix"])) == 2 * n_test  # summed over 2 seeds
    header = (study / "comparison.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("model,backbone,strategy,n_runs,")
    assert "accuracy_mean,accuracy_std,accuracy_ci_low,accuracy_ci_high" in header
    report = (study / "comparison.md").read_text(encoding="utf-8")
    assert "| lenet / scratch |" in report and "![heatmap](figures/heatmap.png)" in report
    assert "## Ensemble" in report and "## Every run" in report


@pytest.mark.slow
def test_transfer_cells_start_from_the_pretrained_backbone(study):
    for backbone in ("basic_cnn", "lenet"):
        record = json.loads((study / "pretrain" / backbone / TRANSFER_SOURCE_JSON).read_text(encoding="utf-8"))
        assert record["backbone"]["name"] == backbone and len(record["sha256"]) == 64
        transfer = json.loads(
            (study / "runs" / f"{backbone}__feature_extraction__seed0" / "metrics.json").read_text(encoding="utf-8"))
        assert transfer["load_report"]["source"].startswith("run:")
        assert transfer["load_report"]["loaded"] > 0
        scratch = json.loads(
            (study / "runs" / f"{backbone}__scratch__seed1" / "metrics.json").read_text(encoding="utf-8"))
        assert scratch["load_report"] is None and scratch["pretrained"] == "none"


@pytest.mark.slow
def test_a_rerun_skips_finished_cells_and_redoes_killed_ones(study, source_config, capsys):
    done = study / "runs" / CELLS[0] / "metrics.json"
    before = done.stat().st_mtime_ns
    killed = study / "runs" / CELLS[-1]
    (killed / "metrics.json").unlink()  # killed after its checkpoint: resumed
    stale = study / "runs" / CELLS[-2]
    for item in stale.iterdir():  # killed before its first checkpoint: restarted
        if item.is_file() and item.name != "config.yaml":
            item.unlink()
    for folder in ("checkpoints", "tensorboard", "figures", "cache"):
        import shutil

        shutil.rmtree(stale / folder, ignore_errors=True)
    assert cell_state(killed) == "resume" and cell_state(stale) == "stale"
    code = main(["compare", str(source_config), *GRID_ARGS, "--output", str(study),
                 "--pretrain", str(source_config), *PRE_SETS, *SETS])
    assert code == 0
    assert done.stat().st_mtime_ns == before
    assert (killed / "metrics.json").is_file() and (stale / "metrics.json").is_file()
    err = capsys.readouterr().err
    assert "finished, skipped" in err and "resuming" in err and "restarting" in err


@pytest.mark.slow
def test_another_grid_in_the_same_folder_is_refused(study, source_config, capsys):
    code = main(["compare", str(source_config), "--backbones", "basic_cnn", "--strategies",
                 "scratch", "--seeds", "2", "--output", str(study), *SETS])
    assert code == 2
    assert "holds a different comparison" in capsys.readouterr().err


def test_a_folder_with_other_files_is_refused(tmp_path, source_config, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["compare", str(source_config), "--backbones", "basic_cnn", "--strategies",
                 "scratch", "--output", str(tmp_path), *SETS])
    assert code == 2 and "never overwritten" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_transfer_without_weights_is_refused_before_anything_runs(tmp_path, source_config,
                                                                   capsys):
    out = tmp_path / "grid"
    code = main(["compare", str(source_config), "--backbones", "lenet", "--strategies",
                 "feature_extraction", "--output", str(out), *SETS])
    assert code == 2
    message = capsys.readouterr().err
    assert "'lenet' would start from random weights" in message and "--pretrain" in message
    assert not out.exists()


def test_missing_weights_of_a_later_backbone_stop_the_study_before_it_starts(
        tmp_path, source_config, capsys, monkeypatch):
    """resnet18's ImageNet file is not on the machine: the study stops before the
    mobilenet_v2 cells (whose weights are installed) run, not after them."""
    monkeypatch.setenv("MEDXFER_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("MEDXFER_WEIGHTS_DIR", raising=False)
    out = tmp_path / "grid"
    code = main(["compare", str(source_config), "--backbones", "mobilenet_v2,resnet18",
                 "--strategies", "scratch,full_finetune", "--seeds", "1", "--output", str(out),
                 *SETS])
    message = capsys.readouterr().err
    assert code == 2
    assert "cell resnet18__full_finetune__seed0: no ImageNet weights" in message
    assert "resnet18-f37072fd.pth" in message
    assert not out.exists()


def test_a_backbone_that_does_not_fit_the_task_is_refused_before_anything_runs(
        tmp_path, capsys):
    config = tmp_path / "seg.yaml"
    config.write_text("task: segmentation\n", encoding="utf-8")
    out = tmp_path / "grid"
    code = main(["compare", str(config), "--backbones", "monai_unet,basic_cnn",
                 "--strategies", "scratch", "--seeds", "1", "--output", str(out), *SETS])
    assert code == 2
    assert "cell basic_cnn__scratch__seed0: model.backbone.name: 'basic_cnn' builds " \
        "classifier features" in capsys.readouterr().err
    assert not out.exists()


def test_a_pretraining_source_of_other_dimensions_is_refused_before_anything_runs(
        tmp_path, source_config, capsys):
    """3D volumes cannot seed a 2D study's backbone: found before pretraining runs."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 12, 12, 12)).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None]
    np.savez(tmp_path / "vol3d.npz", **arrays)
    volumes = tmp_path / "volumes.yaml"
    volumes.write_text(f"data: {{path: {tmp_path / 'vol3d.npz'}}}\n", encoding="utf-8")
    out = tmp_path / "grid"
    code = main(["compare", str(source_config), "--backbones", "basic_cnn", "--strategies",
                 "full_finetune", "--seeds", "1", "--output", str(out),
                 "--pretrain", str(volumes), *PRE_SETS, *SETS])
    assert code == 2
    assert "cell basic_cnn__full_finetune__seed0: the --pretrain data is 3D but the study's " \
        "is 2D" in " ".join(capsys.readouterr().err.split())
    assert not out.exists()


def test_stacking_is_refused_for_a_segmentation_study_before_anything_runs(tmp_path, capsys):
    config = tmp_path / "seg.yaml"
    config.write_text("task: segmentation\n", encoding="utf-8")
    out = tmp_path / "grid"
    code = main(["compare", str(config), "--backbones", "monai_unet", "--strategies",
                 "scratch", "--seeds", "2", "--ensemble", "stacking", "--output", str(out),
                 *SETS])
    assert code == 2 and "combines classification outputs only" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_an_error_in_a_cell_names_the_cell(tmp_path, source_config, capsys):
    out = tmp_path / "grid"
    code = main(["compare", str(source_config), "--backbones", "basic_cnn", "--strategies",
                 "scratch", "--seeds", "1", "--output", str(out), *SETS,
                 "--set", "train.optimizer.lr=1e12"])
    assert code == 2
    assert "cell basic_cnn__scratch__seed0: training diverged in epoch 1" in " ".join(
        capsys.readouterr().err.split())


def test_unknown_plugins_and_bad_lists_are_named(tmp_path, source_config, capsys):
    code = main(["compare", str(source_config), "--backbones", "lenet,nonet", "--strategies",
                 "scratch", "--output", str(tmp_path / "g"), *SETS])
    assert code == 2 and "nonet" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="given twice"):
        parse_names("lenet,lenet", "--backbones")
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_names("lenet,", "--backbones")
    with pytest.raises(ConfigError, match="at least 1"):
        plan_grid(load_config(None), tmp_path / "x", ["lenet"], ["scratch"], 0)


def test_mean_std_ci_is_the_student_t_interval():
    stat = mean_std_ci([1.0, 2.0, 3.0])
    assert stat["mean"] == 2.0 and stat["std"] == pytest.approx(1.0)
    half = 4.302652729911275 / math.sqrt(3)
    assert stat["ci95"] == pytest.approx([2.0 - half, 2.0 + half])
    assert mean_std_ci([0.5, float("nan")]) == {"mean": 0.5, "std": None, "ci95": None, "n": 1}
    assert mean_std_ci([])["mean"] is None


def test_with_backbone_keeps_only_options_that_belong_to_it(tmp_path):
    config = load_config(None, ["model.backbone.name=basic_cnn",
                                "model.backbone.channels=[4,8]",
                                f"model.backbone.pretrained={tmp_path}"])
    same = with_backbone(config, "basic_cnn")
    assert same.model.backbone.kwargs["channels"] == [4, 8]
    other = with_backbone(config, "lenet", ["model.backbone.activation=tanh"])
    assert other.model.backbone.kwargs == {"pretrained": str(tmp_path), "activation": "tanh"}
    imagenet = with_backbone(load_config(None), "lenet")
    assert "pretrained" not in imagenet.model.backbone.kwargs


@pytest.mark.slow
def test_pretrain_record_is_checked_before_transfer(study, tmp_path):
    source = study / "pretrain" / "lenet"
    config = load_config(None, [*QUICK, "model.backbone.name=basic_cnn",
                                f"model.backbone.pretrained={source}"])
    from medxfer.workflows.run import run_pipeline

    with pytest.raises(ConfigError, match="trained backbone 'lenet'.*uses 'basic_cnn'"):
        run_pipeline(config, tmp_path / "wrong", progress=False)
    copy = tmp_path / "tampered"
    import shutil

    shutil.copytree(source, copy)
    ckpt = copy / json.loads((copy / TRANSFER_SOURCE_JSON).read_text(encoding="utf-8"))["checkpoint"]
    data = bytearray(ckpt.read_bytes())
    data[-1] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    config = load_config(None, [*QUICK, "model.backbone.name=lenet",
                                f"model.backbone.pretrained={copy}"])
    with pytest.raises(CheckpointError, match="has changed since `medxfer pretrain`"):
        run_pipeline(config, tmp_path / "tampered_run", progress=False)


def test_pretrain_refuses_a_frozen_backbone(tmp_path):
    config = load_config(None, [*QUICK, "strategy.name=feature_extraction"])
    with pytest.raises(ConfigError, match="keeps the backbone frozen"):
        pretrain(config, tmp_path / "pre", progress=False)
    assert not (tmp_path / "pre").exists()


@pytest.mark.slow
def test_pretrain_cli_writes_a_transfer_source(tmp_path, source_config, capsys):
    out = tmp_path / "pre"
    code = main(["pretrain", str(source_config), "--backbone", "basic_cnn", "--output", str(out),
                 *SETS])
    assert code == 0
    record = json.loads((out / TRANSFER_SOURCE_JSON).read_text(encoding="utf-8"))
    assert record["backbone"] == {"name": "basic_cnn"} and record["task"] == "classification"
    assert "model.backbone.pretrained" in capsys.readouterr().out
    assert main(["pretrain", str(source_config), "--output", str(out), *SETS]) == 2
    assert os.listdir(out)  # the finished run is untouched


def test_backbone_sets_apply_to_that_backbone_only(tmp_path):
    from medxfer.workflows.compare import cell_config, parse_backbone_sets
    from medxfer.plugins import build_registries

    names = ["basic_cnn", "lenet"]
    sets = parse_backbone_sets(["lenet:data.preprocess.image_size=[32,32]"], names)
    registries = build_registries()
    grid = plan_grid(load_config(None, QUICK), tmp_path / "g", names, ["scratch"], 1,
                     backbone_sets=sets, pretrain_config=load_config(None, QUICK),
                     registries=registries)
    by_name = {c.backbone: cell_config(grid, c, registries) for c in grid.cells}
    assert by_name["lenet"].data.preprocess.image_size == [32, 32]
    assert by_name["basic_cnn"].data.preprocess.image_size is None
    assert grid.pretrain_cell_config("lenet").data.preprocess.image_size == [32, 32]
    assert grid.definition()["backbone_sets"] == {"lenet": ["data.preprocess.image_size=[32,32]"]}
    with pytest.raises(ConfigError, match="is not one of --backbones"):
        parse_backbone_sets(["alexnet:train.epochs=2"], names)
    with pytest.raises(ConfigError, match="BACKBONE:KEY=VALUE"):
        parse_backbone_sets(["train.epochs=2"], names)
