"""MONAI segmentation plugins: shapes, encoder views, layer groups and weights, on tiny nets."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import medxfer  # noqa: E402
from medxfer import weights  # noqa: E402
from medxfer.training.checkpoints import save_model  # noqa: E402
from medxfer.errors import ConfigError, InputSizeError, WeightsError  # noqa: E402
from medxfer.models import (SegmentationModel, build_network,  # noqa: E402
                            build_segmentation_network)

from medxfer_plugins.backbones import monai_3d, monai_segmentation  # noqa: E402


def _registries():
    """Only the plugins under test (and the 3D classifiers), as their entry points name them."""
    manager = medxfer.create_plugin_manager(load_entry_points=False)
    manager.register(monai_3d, name="backbone_monai_3d")
    manager.register(monai_segmentation, name="backbone_monai_segmentation")
    return medxfer.build_registries(manager)


REGISTRIES = _registries()

#: Tiny settings and a valid input side per plugin (SwinUNETR: 64 x 32 (x 32) is allowed).
TINY = {
    "monai_unet": ({"channels": (4, 8, 16), "strides": (2, 2)}, (8, 8, 8)),
    "dynunet": ({"depth": 3, "filters": 4}, (8, 8, 8)),
    "segresnet": ({"init_filters": 8, "blocks_down": (1, 1, 1)}, (8, 8, 8)),
    "swinunetr": ({"feature_size": 12, "depths": (1, 1, 1, 1)}, (64, 32, 32)),
    "resnet_unet": ({"decoder_channels": (16, 8, 8, 8, 4)}, (32, 32, 32)),
}


def build(name: str, spatial_dims: int = 3, num_classes: int = 3, **kwargs) -> SegmentationModel:
    no_einops = importlib.util.find_spec("einops") is None
    if name == "swinunetr" and spatial_dims in (2, 3) and no_einops:
        pytest.skip("swinunetr needs einops, which is not installed")
    options = {**TINY[name][0], **kwargs}
    return REGISTRIES.backbone.create(name, in_channels=options.pop("in_channels", 1),
                                      spatial_dims=spatial_dims, num_classes=num_classes,
                                      **options)


def encoder_tensor_keys(model: SegmentationModel) -> set[str]:
    ids = {id(t) for g in model.encoder_groups for t in (*g.parameters(), *g.buffers())}
    return {k for k, t in model.net.state_dict(keep_vars=True).items()
            if id(t) in ids and not k.endswith("num_batches_tracked")}


@pytest.fixture(autouse=True)
def no_weights_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", list(TINY))
def test_builds_and_encoder_view_matches_forward(name, spatial_dims):
    torch.manual_seed(0)
    model = build(name, spatial_dims)
    assert isinstance(model, SegmentationModel) and model.load_report is None
    assert (model.spatial_dims, model.in_channels, model.num_classes) == (spatial_dims, 1, 3)
    spatial = TINY[name][1][:spatial_dims]
    assert all(s % model.size_divisor == 0 for s in spatial)

    path_params = {id(p) for m in model.encoder_path for p in m.parameters()}
    grouped = [id(p) for g in model.encoder_groups for p in g.parameters()]
    assert len(model.encoder_groups) >= 2 and len(grouped) == len(set(grouped))
    assert set(grouped) == path_params

    network = build_segmentation_network(model).eval()
    x = torch.randn(2, 1, *spatial)
    with torch.no_grad():
        logits, features = network.forward_features(x)
        alone = network.backbone(x)
    assert logits.shape == (2, 3, *spatial)
    assert features.shape == (2, model.feature_dim)
    torch.testing.assert_close(alone, features)


def test_registered_and_refuse_other_dims():
    for name in TINY:
        assert name in REGISTRIES.backbone
        with pytest.raises(ConfigError, match=name):
            build(name, spatial_dims=1)


def test_input_sides_must_fit_the_network():
    network = build_segmentation_network(build("monai_unet"))
    with pytest.raises(ConfigError, match="multiples of 4"):
        network(torch.randn(1, 1, 8, 8, 6))
    with pytest.raises(InputSizeError, match="at least 8; got 4x4x4: change data.patch.size"):
        network(torch.randn(1, 1, 4, 4, 4))


# --- weights --------------------------------------------------------------------------------


def medicalnet_state(depth: int = 10, in_channels: int = 1) -> dict[str, torch.Tensor]:
    """A MONAI ResNet in MedicalNet's settings, its tensors shifted so a load is visible."""
    from monai.networks.nets import resnet
    from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

    bias, shortcut = get_medicalnet_pretrained_resnet_args(depth)
    source = getattr(resnet, f"resnet{depth}")(spatial_dims=3, n_input_channels=in_channels,
                                               feed_forward=False, shortcut_type=shortcut,
                                               bias_downsample=bias)
    return {k: v + 0.5 if v.is_floating_point() else v for k, v in source.state_dict().items()}


def test_medicalnet_file_fills_the_resnet_encoder(tmp_path, monkeypatch):
    state = medicalnet_state()
    wrapped = {f"module.{k}": v for k, v in state.items()}
    wrapped["module.conv_seg.0.weight"] = torch.zeros(2)
    path = tmp_path / "resnet_10_23dataset.pth"
    torch.save({"state_dict": wrapped, "epoch": 3}, path)

    model = build("resnet_unet", pretrained=str(path))
    report = model.load_report
    assert report.loaded == report.expected == len(encoder_tensor_keys(model))
    assert report.skipped == ["conv_seg.0.weight"] and report.sha256
    torch.testing.assert_close(model.net.encoder.layer4[0].bn2.weight,
                               state["layer4.0.bn2.weight"])

    two = build("resnet_unet", pretrained=str(path), in_channels=2)
    torch.testing.assert_close(two.net.encoder.conv1.weight,
                               state["conv1.weight"].repeat(1, 2, 1, 1, 1) / 2)

    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path))
    assert build("resnet_unet", pretrained="medicalnet").load_report.source == str(path)


def test_missing_or_unsuitable_weights_say_what_to_do(tmp_path):
    with pytest.raises(WeightsError, match="does not exist.*Download.*MedicalNet-Resnet10"):
        build("resnet_unet", pretrained=str(tmp_path / "resnet_10_23dataset.pth"))
    with pytest.raises(WeightsError, match="Download resnet_18_23dataset.pth"):
        build("resnet_unet", pretrained="medicalnet", depth=18)
    with pytest.raises(ConfigError, match="no ImageNet weights"):
        build("resnet_unet", pretrained="imagenet")
    with pytest.raises(ConfigError, match="MedicalNet weights are 3D"):
        build("resnet_unet", spatial_dims=2, pretrained="medicalnet")
    with pytest.raises(ConfigError, match="not a medxfer run folder"):
        build("dynunet", pretrained=str(tmp_path))


def classifier_run(tmp_path, variant: str, **options):
    backbone = REGISTRIES.backbone.create(variant, in_channels=1, spatial_dims=3,
                                          pretrained="none", **options)
    run = tmp_path / variant
    save_model(run, build_network(backbone, 2), {"imagenet_norm": False})
    return run, backbone


def test_classification_run_fills_the_resnet_encoder(tmp_path):
    run, backbone = classifier_run(tmp_path, "resnet10_3d")
    model = build("resnet_unet", pretrained=str(run))
    report = model.load_report
    assert report.source == f"run:{run}"
    assert report.loaded == report.expected == len(encoder_tensor_keys(model))
    assert torch.equal(model.net.encoder.layer3[0].conv1.weight,
                       backbone.body.layer3[0].conv1.weight)
    with pytest.raises(WeightsError, match="classifier backbone"):
        build("segresnet", pretrained=str(run))


def test_shortcut_type_must_match_the_source(tmp_path):
    run, _ = classifier_run(tmp_path, "resnet18_3d")  # medxfer's default: shortcut B
    with pytest.raises(WeightsError, match="shortcut_type: B"):
        build("resnet_unet", depth=18, pretrained=str(run))
    model = build("resnet_unet", depth=18, shortcut_type="B", pretrained=str(run))
    assert model.load_report.loaded == model.load_report.expected


@pytest.mark.parametrize("name", list(TINY))
def test_segmentation_run_of_the_same_network(name, tmp_path):
    torch.manual_seed(0)
    source = build(name, num_classes=2)
    run = tmp_path / "run"
    save_model(run, build_segmentation_network(source), {"task": "segmentation"})

    same = build(name, num_classes=2, pretrained=str(run))
    assert same.load_report.skipped == []
    for key, value in same.net.state_dict().items():
        assert torch.equal(value, source.net.state_dict()[key]), key

    other = build(name, num_classes=4, pretrained=str(run))  # a new task: a new output layer
    report = other.load_report
    encoder = encoder_tensor_keys(other)
    assert report.loaded == report.expected and report.skipped
    assert not encoder & set(report.skipped)
    for key in encoder:
        assert torch.equal(other.net.state_dict()[key], source.net.state_dict()[key]), key


def test_swin_transformer_weights_alone(tmp_path):
    source = build("swinunetr")
    state = {f"module.{k}": v + 1 if v.is_floating_point() else v
             for k, v in source.net.swinViT.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    model = build("swinunetr", pretrained=str(tmp_path / "model_swinvit.pt"))
    assert model.load_report.loaded == model.load_report.expected
    torch.testing.assert_close(model.net.swinViT.patch_embed.proj.weight,
                               state["module.patch_embed.proj.weight"])
