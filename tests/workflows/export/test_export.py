"""TorchScript and ONNX exports reproduce medxfer's logits; outputs are never overwritten."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from medxfer.errors import CheckpointError, ConfigError
from medxfer.workflows.export import TOLERANCES, export_run
from medxfer.workflows.export.common import example_inputs

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


@pytest.mark.parametrize("fmt", ["torchscript",
                                 pytest.param("onnx", marks=pytest.mark.slow)])
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


@pytest.mark.slow
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
    from medxfer.workflows.export import AUTO_INTENSITY, _preprocessing

    sample = _preprocessing(RunConfig.model_validate({}))  # the embedded sample data
    assert sample["intensity"] == "auto" and sample["intensity_auto"] == AUTO_INTENSITY
    medmnist = _preprocessing(RunConfig.model_validate({"data": {"path": "any/pneumonia.npz"}}))
    assert medmnist["intensity"] == "uint8" and "intensity_auto" not in medmnist


def test_export_json_gives_the_decision_threshold_and_the_normalisation(cls_run, tmp_path):
    """What `medxfer predict` applies beyond the network: the validation threshold, and the
    ImageNet mean/std of the inputs."""
    (cls_run.run_dir / "metrics.json").write_text(json.dumps({"threshold": 0.7}),
                                                  encoding="utf-8")
    sidecar = json.loads((cls_run.run_dir / "model.json").read_text(encoding="utf-8"))
    sidecar["imagenet_norm"] = True
    (cls_run.run_dir / "model.json").write_text(json.dumps(sidecar), encoding="utf-8")
    export_run(cls_run.run_dir, "torchscript", tmp_path / "ts")
    info = json.loads((tmp_path / "ts" / "export.json").read_text(encoding="utf-8"))
    assert info["decision"]["threshold"] == 0.7
    assert "class 1 when its softmax probability is >= threshold" in info["decision"]["rule"]
    assert info["input"]["normalisation"] == {"mean": [0.449], "std": [0.226]}
    assert "domain" not in info and info["test_time_augmentation"] is None


def test_domain_target_needs_domain_specific_layers(cls_run, tmp_path):
    with pytest.raises(ConfigError, match="has no domain-specific layers"):
        export_run(cls_run.run_dir, "torchscript", tmp_path / "ts", domain="target")
    assert not (tmp_path / "ts").exists()


@pytest.mark.slow
def test_a_dsbn_run_exports_the_domain_asked_for(tmp_path):
    """Domain-specific batch norm: the exported model is the source or the target one, as
    asked, and export.json says which."""
    from medxfer.config import load_config
    from medxfer.data.shift import parse_recipe, shift_medmnist
    from medxfer.workflows.predict import load_run
    from medxfer.workflows.run import run_pipeline
    from medxfer.models import set_domain
    from tests.helpers import fake_medmnist

    source = fake_medmnist(tmp_path / "fakemnist.npz")
    target = shift_medmnist(source, tmp_path / "shifted.npz",
                            parse_recipe([{"name": "gamma", "gamma": 2.0}]))
    config = load_config(None, [
        f"data.path={source}", f"data.target.path={target}", "data.augment.preset=none",
        "model.backbone.name=basic_cnn", "model.backbone.channels=[4,8]",
        "model.backbone.pretrained=none", "strategy.name=scratch", "train.epochs=1",
        "train.batch_size=8", "eval.bootstrap=0", "domain_adaptation.name=dsbn"])
    run_pipeline(config, tmp_path / "run", progress=False)
    x = torch.rand(2, 1, 16, 16)
    outputs = {}
    for domain in ("source", "target"):
        export_run(tmp_path / "run", "torchscript", tmp_path / domain, domain=domain)
        info = json.loads((tmp_path / domain / "export.json").read_text(encoding="utf-8"))
        assert info["domain"] == domain
        loaded = load_run(tmp_path / "run")
        set_domain(loaded.model, domain)
        with torch.no_grad():
            outputs[domain] = _load_ts(tmp_path / domain / "model.ts")(x)
            _assert_close(loaded.model(x), outputs[domain], "torchscript")
    assert not torch.allclose(outputs["source"], outputs["target"])


@pytest.mark.parametrize("fmt", ["torchscript",
                                 pytest.param("onnx", marks=pytest.mark.slow)])
def test_export_json_gives_the_resize_interpolation_the_transform_uses(cls_run, tmp_path, fmt):
    """export.json says how images are resized to image_size (bilinear, anti-aliased), from
    the values medxfer's own transform uses; following it reproduces medxfer's input, which
    MONAI Resize's default (area) does not."""
    import numpy as np
    from monai.transforms import Resize, Resized
    from PIL import Image

    from medxfer.data import inference_transform
    from medxfer.data.preprocess import preprocess_transform
    from medxfer.data.transforms import GREY_WEIGHTS

    if fmt == "onnx":
        pytest.importorskip("onnx")
    export_run(cls_run.run_dir, fmt, tmp_path / fmt)
    info = json.loads((tmp_path / fmt / "export.json").read_text(encoding="utf-8"))
    steps = info["input"]["preprocessing"]["steps"]
    resize = steps["resize"]
    assert resize["mode"] == "bilinear" and resize["anti_aliasing"] is True
    assert resize["spatial_size"] == [32, 32]
    assert steps["order"].index("resize") < steps["order"].index("channels")
    assert steps["channels"]["rgb_to_grey"]["weights"] == list(GREY_WEIGHTS)
    chain = preprocess_transform(cls_run.config.data.preprocess, task="classification",
                                 spatial_dims=2, num_classes=2, imagenet_norm=False)
    used = next(t for t in chain.transforms if isinstance(t, Resized))
    assert (used.mode[0], used.anti_aliasing[0]) == (resize["mode"], resize["anti_aliasing"])

    png = tmp_path / "big.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (90, 70), dtype=np.uint8)).save(png)
    medxfer_input = inference_transform(cls_run.config, imagenet_norm=False, spatial_dims=2)(png)
    x = torch.from_numpy(np.asarray(Image.open(png), dtype=np.float32))[None]
    x = (x - x.min()) / (x.max() - x.min())  # intensity: minmax
    kwargs = {k: resize[k] for k in ("mode", "anti_aliasing")}
    following = Resize(resize["spatial_size"], **kwargs)(x).as_tensor()
    assert torch.allclose(following, medxfer_input, atol=1e-6)
    area = Resize(resize["spatial_size"])(x).as_tensor()
    assert not torch.allclose(area, medxfer_input, atol=1e-3)


def test_grey_weights_are_what_channels_grey_applies():
    from medxfer.data.transforms import GREY_WEIGHTS, AdaptChannels

    rgb = torch.rand(3, 4, 5)
    expected = sum(w * rgb[i] for i, w in enumerate(GREY_WEIGHTS))[None]
    assert torch.allclose(AdaptChannels("grey")(rgb), expected)
