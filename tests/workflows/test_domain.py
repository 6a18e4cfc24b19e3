"""run_pipeline with target-domain data: every method, target metrics, report, figure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medxfer.config import load_config
from medxfer.data.shift import parse_recipe, shift_medmnist
from medxfer.workflows.predict import load_run
from medxfer.workflows.run import run_pipeline
from medxfer.errors import ConfigError, DataError
from tests.helpers import fake_medmnist


@pytest.fixture
def source_and_target(tmp_path):
    source = fake_medmnist(tmp_path / "fakemnist.npz")
    target = shift_medmnist(source, tmp_path / "fakemnist_shifted.npz",
                            parse_recipe([{"name": "gamma", "gamma": 2.0},
                                          {"name": "noise", "std": 0.05}]))
    return source, target


def _config(source, target, *extra):
    return load_config(None, [
        f"data.path={source}", f"data.target.path={target}", "data.augment.preset=none",
        "model.backbone.name=basic_cnn", "model.backbone.channels=[4,8]",
        "model.backbone.pretrained=none", "strategy.name=scratch", "train.epochs=1",
        "train.batch_size=8", "eval.bootstrap=0", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("method", [None, "dann", "dsbn", "adabn", "coral", "mmd"])
def test_target_test_metrics_report_and_features(tmp_path, source_and_target, method):
    source, target = source_and_target
    extra = [f"domain_adaptation.name={method}"] if method else []
    summary = run_pipeline(_config(source, target, *extra), tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert summary["target_test"]["n"] == 12
    assert 0.0 <= summary["target_test"]["accuracy"] <= 1.0
    saved = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert "target_test" in saved
    assert (summary.get("domain_adaptation") or {}).get("name") == method
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "## Source and target domains" in report and "Target test" in report
    assert "figures/domain_features_pca.png" in summary["figures"]
    with np.load(run / "features.npz") as features:
        assert features["source"].shape == features["target"].shape == (12, 8)
    loaded = load_run(run)  # `medxfer predict` rebuilds the network the method changed
    assert loaded.model(torch.zeros(2, 1, 16, 16)).shape == (2, 2)


def test_a_method_without_target_data_is_a_config_error(tmp_path, source_and_target):
    source, _ = source_and_target
    config = load_config(None, [f"data.path={source}", "domain_adaptation.name=coral"])
    with pytest.raises(ConfigError, match="data.target.path"):
        run_pipeline(config, tmp_path / "run", progress=False)


def test_target_of_another_kind_is_a_data_error(tmp_path, source_and_target):
    source, _ = source_and_target
    other = tmp_path / "rgbmnist.npz"
    rng = np.random.default_rng(0)
    np.savez(other, **{f"{s}_images": rng.integers(0, 255, (8, 16, 16, 3)).astype(np.uint8)
                       for s in ("train", "val", "test")},
             **{f"{s}_labels": (np.arange(8) % 2)[:, None] for s in ("train", "val", "test")})
    with pytest.raises(DataError, match="data.target.path.*in_channels"):
        run_pipeline(_config(source, other, "data.preprocess.channels=auto"), tmp_path / "run",
                     progress=False)


@pytest.mark.slow
def test_segmentation_run_scores_the_target_test_cases(tmp_path, repo_root):
    method = "dsbn"
    sample = repo_root / "sample_data" / "segmentation_2d"
    if not sample.is_dir():
        pytest.skip("sample_data/segmentation_2d is absent (scripts/make_sample_data.py)")
    config = load_config(repo_root / "configs" / "sample_segmentation_2d.yaml", [
        "train.epochs=1", "data.limit=3", "eval.bootstrap=0", "model.backbone.pretrained=none",
        "data.augment.preset=none", f"data.target.path={sample}", "data.target.limit=2",
        f"domain_adaptation.name={method}", "model.backbone.encoder_depth=3"])
    summary = run_pipeline(config, tmp_path / "run", progress=False)
    assert summary["target_test"]["n"] == 2
    assert 0.0 <= summary["target_test"]["dice"] <= 1.0
    assert "## Source and target domains" in (tmp_path / "run" / "report.md").read_text(encoding="utf-8")



def _sample_as_class_folders(root, names):
    """The embedded sample classification images copied as class folders, ``normal`` and
    ``lesion`` renamed by ``names``."""
    import shutil

    from medxfer.data.sample import ensure_sample_data

    sample = ensure_sample_data("classification")
    for name in ("normal", "lesion"):
        shutil.copytree(sample / name, root / names.get(name, name))
    return root


def _source_and_config(tmp_path, target_dir):
    from medxfer.data import load_data

    config = load_config(None, [f"data.target.path={target_dir}", "data.augment.preset=none",
                                "model.backbone.pretrained=none"])
    return load_data(config, imagenet_norm=False, cache_dir=tmp_path / "cache"), config


def test_target_classes_in_another_order_get_the_sources_label_order(tmp_path):
    """The sample's manifest orders its classes normal, lesion; the same images as class
    folders are read alphabetically (lesion, normal). Target labels must still mean the
    source's classes (they were silently swapped: target AUC 0.285 against 0.743)."""
    from medxfer.workflows.domain import load_target_data

    target_dir = _sample_as_class_folders(tmp_path / "target", {})
    source, config = _source_and_config(tmp_path, target_dir)
    assert source.class_names == ["normal", "lesion"]
    target = load_target_data(config, source, imagenet_norm=False,
                              cache_dir=tmp_path / "cache_t")
    assert target.class_names == ["normal", "lesion"]
    folders = [Path(case["image"]).parent.name for case in target.cases]
    assert set(folders) == {"normal", "lesion"}
    assert [target.class_names[case["label"]] for case in target.cases] == folders


def test_target_classes_with_other_names_are_refused(tmp_path):
    from medxfer.workflows.domain import load_target_data

    target_dir = _sample_as_class_folders(tmp_path / "target",
                                          {"normal": "benign", "lesion": "malignant"})
    source, config = _source_and_config(tmp_path, target_dir)
    with pytest.raises(DataError, match=r"the target's classes \['benign', 'malignant'\] are "
                                        r"not the source's \['normal', 'lesion'\]"):
        load_target_data(config, source, imagenet_norm=False, cache_dir=tmp_path / "cache_t")


def _numbered_manifest(root, order):
    """The embedded sample classification images under ``root`` with a manifest whose
    labels are numbers: ``order[i]`` is the class numbered ``i``."""
    import shutil

    from medxfer.data.sample import ensure_sample_data

    sample = ensure_sample_data("classification")
    rows = ["image,label,patient_id"]
    for number, name in enumerate(order):
        shutil.copytree(sample / name, root / name)
        rows += [f"{name}/{p.name},{number},{p.stem}" for p in sorted((root / name).iterdir())]
    (root / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def _load_target(tmp_path, source_path, target_path, *extra):
    """``load_target_data`` of a source and a target, and the class-order warnings given."""
    import warnings

    from medxfer.data import load_data
    from medxfer.workflows.domain import ClassOrderWarning, load_target_data

    options = [f"data.target.path={target_path}", "data.augment.preset=none",
               "model.backbone.pretrained=none", *extra]
    if source_path is not None:
        options.append(f"data.path={source_path}")
    config = load_config(None, options)
    source = load_data(config, imagenet_norm=False, cache_dir=tmp_path / "cache")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target = load_target_data(config, source, imagenet_norm=False,
                                  cache_dir=tmp_path / "cache_t")
    return source, target, [str(w.message) for w in caught
                            if issubclass(w.category, ClassOrderWarning)]


def _read_as(target):
    """Per target case: the class its label is read as and the class folder it is from."""
    return [(target.class_names[case["label"]], Path(case["image"]).parent.name)
            for case in target.cases]


def test_numbered_target_labels_read_in_the_alphabetical_folder_order_warn(tmp_path):
    """A source of class folders has its classes in alphabetical order (lesion, normal);
    a target numbered 0=normal, 1=lesion was read with every label swapped (target AUC
    0.014) without a word."""
    source_dir = _sample_as_class_folders(tmp_path / "source", {})
    target_dir = _numbered_manifest(tmp_path / "target", ["normal", "lesion"])
    source, target, warned = _load_target(tmp_path, source_dir, target_dir)
    assert source.class_names == target.class_names == ["lesion", "normal"]
    assert all(read != folder for read, folder in _read_as(target))  # the documented rule
    assert len(warned) == 1
    assert "the target's numbered labels are read as 0=lesion, 1=normal" in warned[0]
    assert "folder names, alphabetical" in warned[0]
    assert "declare data.classes" in warned[0]


def test_numbered_target_labels_with_declared_classes_do_not_warn(tmp_path):
    source_dir = _sample_as_class_folders(tmp_path / "source", {})
    target_dir = _numbered_manifest(tmp_path / "target", ["normal", "lesion"])
    source, target, warned = _load_target(tmp_path, source_dir, target_dir,
                                          "data.classes=[normal,lesion]")
    assert source.class_names == target.class_names == ["normal", "lesion"]
    assert all(read == folder for read, folder in _read_as(target))
    assert warned == []


def test_named_target_labels_do_not_warn(tmp_path):
    """The sample manifest names its classes (normal, lesion): matched by name."""
    from medxfer.data.sample import ensure_sample_data

    source_dir = _sample_as_class_folders(tmp_path / "source", {})
    source, target, warned = _load_target(tmp_path, source_dir,
                                          ensure_sample_data("classification"))
    assert source.class_names == target.class_names == ["lesion", "normal"]
    assert all(read == folder for read, folder in _read_as(target))
    assert warned == []


def test_numbered_target_labels_in_a_declared_source_order_do_not_warn(tmp_path):
    """The sample manifest's classes.txt declares the source's order (normal, lesion)."""
    target_dir = _numbered_manifest(tmp_path / "target", ["normal", "lesion"])
    source, target, warned = _load_target(tmp_path, None, target_dir)
    assert source.class_names == target.class_names == ["normal", "lesion"]
    assert all(read == folder for read, folder in _read_as(target))
    assert warned == []
