"""TorchScript and ONNX exports reproduce medxfer's logits; outputs are never overwritten."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from medxfer.errors import CheckpointError, ConfigError
from medxfer.export import TOLERANCES, export_run
from medxfer.export.common import example_inputs

SEG_SHAPES = [(1, 1, 24, 40, 16), (3, 1, 44, 20, 36)]


def _load_ts(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path))


@torch.no_grad()
def _assert_close(expected, got, fmt):
    atol, rtol = TOLERANCES[fmt]
    assert got.shape == expected.shape
    assert torch.allclose(got.float(), expected.float(), atol=atol, rtol=rtol), \
        float((got - expected).abs().max())


def test_torchscript_segmentation_matches_on_other_sizes(seg_run, tmp_path):
    result = export_run(seg_run.run_dir, "torchscript", tmp_path / "ts")
    assert sorted(p.name for p in (tmp_path / "ts").iterdir()) == ["export.json", "model.ts"]
    ts = _load_ts(tmp_path / "ts" / "model.ts")
    for x in example_inputs(SEG_SHAPES, seed=3):  # sizes it was not traced with
        with torch.no_grad():
            _assert_close(seg_run.model(x), ts(x), "torchscript")
    info = json.loads((tmp_path / "ts" / "export.json").read_text(encoding="utf-8"))
    assert info["format"] == "torchscript" and info["input"]["size_divisor"] == 4
    assert info["check"]["max_abs_diff"] <= TOLERANCES["torchscript"][0]
    assert result.check.max_abs_diff == info["check"]["max_abs_diff"]
    assert info["output"]["class_names"] == ["background", "class1", "class2"]


def test_torchscript_classification(cls_run, tmp_path):
    export_run(cls_run.run_dir, "torchscript", tmp_path / "ts")
    ts = _load_ts(tmp_path / "ts" / "model.ts")
    for x in example_inputs([(5, 1, 32, 32), (2, 1, 28, 28), (1, 1, 45, 37)], seed=1):
        with torch.no_grad():
            _assert_close(cls_run.model(x), ts(x), "torchscript")
    output = json.loads((tmp_path / "ts" / "export.json").read_text(encoding="utf-8"))["output"]
    assert output == {"name": "logits", "class_names": ["background", "class1"],
                      "meaning": "softmax over dimension 1 gives class probabilities"}


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_regression_export_json_describes_the_value_not_probabilities(reg_run, tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    export_run(reg_run.run_dir, fmt, tmp_path / fmt)
    info = json.loads((tmp_path / fmt / "export.json").read_text(encoding="utf-8"))
    assert info["task"] == "regression"
    output = info["output"]
    assert output["name"] == "logits" and output["target"] == "label"
    assert "class_names" not in output
    assert "regression value" in output["meaning"] and "no softmax" in output["meaning"]
    assert "probabilities" not in output["meaning"]


def test_onnx_segmentation_and_classification(seg_run, cls_run, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    export_run(seg_run.run_dir, "onnx", tmp_path / "seg")
    export_run(cls_run.run_dir, "onnx", tmp_path / "cls")
    # the classifier takes any size, as its export.json says ("*"): not only the 32 px of
    # its config, also e.g. a 28 px MedMNIST image
    cls_shapes = [(4, 1, 32, 32), (2, 1, 28, 28), (1, 1, 45, 37)]
    cases = [(seg_run, tmp_path / "seg", SEG_SHAPES), (cls_run, tmp_path / "cls", cls_shapes)]
    for run, folder, shapes in cases:
        session = ort.InferenceSession(str(folder / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["image"]
        for x in example_inputs(shapes, seed=5):
            got = torch.from_numpy(session.run(["logits"], {"image": x.numpy()})[0])
            with torch.no_grad():
                _assert_close(run.model(x), got, "onnx")
        info = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        assert info["onnx_exporter"] in ("torch.export", "torchscript")


def test_refuses_a_used_output_folder_and_leaves_it_alone(seg_run, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="never overwritten"):
        export_run(seg_run.run_dir, "torchscript", out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    export_run(seg_run.run_dir, "torchscript", empty)  # an empty folder is fine
    assert (empty / "model.ts").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_bad_format_and_not_a_run(seg_run, tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'onnx'"):
        export_run(seg_run.run_dir, "onxx", tmp_path / "x")
    with pytest.raises(CheckpointError, match="not a finished medxfer run"):
        export_run(tmp_path, "torchscript", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_onnx_without_the_extra_says_how_to_install(seg_run, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(ConfigError, match=r'medxfer\[export\]'):
        export_run(seg_run.run_dir, "onnx", tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_export_json_says_what_auto_intensity_does():
    from medxfer.config import RunConfig
    from medxfer.export import AUTO_INTENSITY, _preprocessing

    sample = _preprocessing(RunConfig.model_validate({}))  # the embedded sample data
    assert sample["intensity"] == "auto" and sample["intensity_auto"] == AUTO_INTENSITY
    medmnist = _preprocessing(RunConfig.model_validate({"data": {"path": "any/pneumonia.npz"}}))
    assert medmnist["intensity"] == "uint8" and "intensity_auto" not in medmnist
