"""A monai-bundle export is a complete MONAI bundle: the files of MONAI's bundle
specification, weights as a state dict of a ``_target_`` network (TorchScript only as a
fallback, said in the metadata), metadata valid against MONAI's schema, and configs that
MONAI's ``ConfigWorkflow`` initialises and runs for inference and for training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from jsonschema import Draft201909Validator
from PIL import Image

from medxfer.workflows.export import export_run
from medxfer.workflows.export.bundle_network import recorded_arguments
from tests.workflows.export.helpers import make_run, write_labelled_cases, write_volume

SCHEMA = Path(__file__).parent / "schema" / "monai_bundle_meta_schema.json"
RUNNER = Path(__file__).parent / "bundle_runner.py"
FILES = ["configs/metadata.json", "configs/inference.json", "configs/train.json",
         "configs/logging.conf", "models/model.pt", "models/model.ts", "docs/README.md",
         "LICENSE"]


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _network_def(bundle: Path) -> torch.nn.Module:
    """``network_def`` as MONAI's ConfigParser builds it, with ``models/model.pt`` loaded."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(_json(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    return net


def _workflow(bundle: Path, kind: str, **override):
    from monai.bundle import ConfigWorkflow

    config = bundle / "configs" / ("inference.json" if kind == "infer" else "train.json")
    # logging.conf would reconfigure this test process's root logger: the subprocess test
    # below applies it
    return ConfigWorkflow(config_file=str(config), meta_file=str(bundle / "configs" /
                                                                 "metadata.json"),
                          logging_file=False, workflow_type=kind, bundle_root=str(bundle),
                          **override)


def test_segmentation_bundle_is_complete_with_a_target_network(seg_run, tmp_path):
    bundle = export_run(seg_run.run_dir, "monai-bundle", tmp_path / "bundle").output
    assert all((bundle / f).is_file() for f in FILES), sorted(map(str, bundle.rglob("*")))
    config = _json(bundle / "configs" / "inference.json")
    assert config["network_def"]["_target_"] == "monai.networks.nets.UNet"
    assert config["network_def"]["channels"] == [4, 8, 16]
    meta = _json(bundle / "configs" / "metadata.json")
    assert meta["medxfer"]["network"]["definition"] == "_target_"
    net = _network_def(bundle).eval()  # every key of model.pt matched (strict load)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.equal(net(x), seg_run.model(x))
    licence = (bundle / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License, Version 2.0" in licence and "training data" in licence


def test_classification_bundle_falls_back_to_torchscript_and_says_why(cls_run, tmp_path):
    bundle = export_run(cls_run.run_dir, "monai-bundle", tmp_path / "bundle").output
    config = _json(bundle / "configs" / "inference.json")
    assert "torch.jit.load" in config["network_def"]
    network = _json(bundle / "configs" / "metadata.json")["medxfer"]["network"]
    assert network["definition"] == "torchscript"
    assert "TransferNetwork" in network["fallback_reason"]
    assert "models/model.ts" in (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    net = _network_def(bundle)  # model.pt is the TorchScript module's own state dict
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), cls_run.model(x), atol=1e-6)


@pytest.mark.parametrize("run", ["seg_run", "cls_run", "reg_run"])
def test_metadata_is_valid_against_monais_schema(run, request, tmp_path):
    loaded = request.getfixturevalue(run)
    bundle = export_run(loaded.run_dir, "monai-bundle", tmp_path / "bundle").output
    meta = _json(bundle / "configs" / "metadata.json")
    errors = list(Draft201909Validator(_json(SCHEMA)).iter_errors(meta))
    assert not errors, [e.message for e in errors]
    assert meta["schema"].endswith("meta_schema_20240725.json")


def test_segmentation_bundle_runs_as_a_monai_infer_workflow(seg_run, tmp_path):
    images = tmp_path / "images"
    write_volume(images / "a.nii.gz", (27, 35, 19), seed=1)
    bundle = export_run(seg_run.run_dir, "monai-bundle", tmp_path / "bundle").output
    workflow = _workflow(bundle, "infer", dataset_dir=str(images),
                         output_dir=str(tmp_path / "out"))
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.evaluator.network is workflow.network_def  # the standard properties
    workflow.run()
    workflow.finalize()
    assert (tmp_path / "out" / "a_seg.nii.gz").is_file()
    assert torch.is_grad_enabled()


def test_classification_bundle_fine_tunes_as_a_monai_train_workflow(cls_run, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.new("L", (40, 48), color=60 * i).save(data / f"img{i}.png")
    (data / "dataset.json").write_text(json.dumps({"training": [
        {"image": f"img{i}.png", "label": i % 2} for i in range(4)]}), encoding="utf-8")
    bundle = export_run(cls_run.run_dir, "monai-bundle", tmp_path / "bundle").output
    before = torch.load(bundle / "models" / "model.pt", weights_only=True)
    workflow = _workflow(bundle, "train", dataset_dir=str(data),
                         **{"train#trainer#max_epochs": 1})
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()
    after = torch.load(bundle / "models" / "model_finetuned.pt", weights_only=True)
    assert after.keys() == before.keys()
    assert any(not torch.equal(after[k], before[k]) for k in before)  # it trained


@pytest.mark.slow
def test_segmentation_bundle_trains_and_predicts_where_medxfer_cannot_be_imported(
        seg_run, tmp_path):
    """``python -I`` with an import blocker: MONAI, torch and nibabel only; logging.conf on."""
    data = write_labelled_cases(tmp_path / "data")
    images = tmp_path / "images"
    write_volume(images / "a.nii.gz", (27, 35, 19), seed=1)
    bundle = export_run(seg_run.run_dir, "monai-bundle", tmp_path / "bundle").output
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    logs = {}
    for args in (["train", str(bundle), str(data), "1"],
                 ["infer", str(bundle), str(images), str(tmp_path / "out")]):
        done = subprocess.run([sys.executable, "-I", str(RUNNER), *args], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["medxfer_blocked"] and not report["medxfer_loaded"]
        assert report["missing"] == []
        logs[args[0]] = done.stdout
    assert " - bundle.train - INFO - epoch 1/1: mean loss " in logs["train"]  # logging.conf
    assert (bundle / "models" / "model_finetuned.pt").is_file()
    assert (tmp_path / "out" / "a_seg.nii.gz").is_file()


@pytest.mark.slow
def test_a_network_that_registers_modules_twice_keeps_its_library_class(tmp_path):
    """DynUNet registers each block twice; the plugin drops the aliases from its weights."""
    run = make_run(tmp_path / "run", ["task=segmentation", "model.backbone.name=dynunet",
                                      "model.backbone.depth=3", "model.backbone.filters=8",
                                      "model.backbone.pretrained=none"],
                   spatial_dims=3, num_classes=3)
    bundle = export_run(run.run_dir, "monai-bundle", tmp_path / "bundle").output
    config = _json(bundle / "configs" / "inference.json")
    assert config["network_def"]["_target_"] == "monai.networks.nets.DynUNet"
    net = _network_def(bundle).eval()  # model.pt has the aliases too: a strict load
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), run.model(x))


def test_recording_constructor_arguments_leaves_the_class_as_it_was():
    from monai.networks.nets import UNet

    class Inherits(UNet):
        pass

    with recorded_arguments(Inherits) as calls:
        Inherits(spatial_dims=2, in_channels=1, out_channels=2, channels=(4, 8), strides=(2,))
        UNet(spatial_dims=2, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,))
    assert calls == [{"spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                      "channels": (4, 8), "strides": (2,)}]
    assert "__init__" not in Inherits.__dict__ and UNet.__init__.__name__ == "__init__"
