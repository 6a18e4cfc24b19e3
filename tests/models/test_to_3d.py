"""Contract of the 2D -> 3D conversions (``model.backbone.to_3d``), run on every registered
classifier backbone that builds 2D networks, so a new backbone is covered when it exists.

For each backbone and each of ``acs``, ``i3d`` and ``2.5d``: the converted backbone takes
a volume and gives ``[N, feature_dim]``, its layer groups still partition the trainable
parameters (and freezing one freezes the converted layers), or the conversion is refused
when the backbone is built, with an error naming it and pointing to ``2.5d``. Where the
identity holds, a volume constant along depth gives the 2D network's output on the slice
(I3D, whose depth padding repeats the edge slices, and 2.5D); ACS, whose parts look along
three different planes, is checked layer by layer.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import medxfer  # noqa: E402
from medxfer.errors import ConfigError  # noqa: E402
from medxfer.models.adapt import check_layer_groups  # noqa: E402
from medxfer.models.functional_3d import Functional3d  # noqa: E402
from medxfer.models.layers_3d import ACSConv, InflatedConv3d  # noqa: E402
from medxfer.models.to_3d import TO_3D_METHODS, backbone_to_3d  # noqa: E402
from medxfer.weights_lookup import offline_package_file  # noqa: E402

REGISTRIES = medxfer.build_registries(medxfer.create_plugin_manager())
ENTRIES = [e for e in REGISTRIES.backbone.entries()
           if e.capabilities and e.capabilities.output == "features" and e.capabilities.builds(2)]
#: (backbone, method) pairs that are refused, and why: LeNet's default backbone ends with
#: its fully connected layers, whose width is the 2D feature map's.
REFUSED = {("lenet", "acs"), ("lenet", "i3d")}
#: Big networks at their smallest cube: real forward passes of seconds each.
HEAVY = {"alexnet", "inception_v3", "densenet121"} | {e.name for e in ENTRIES
                                                     if e.name.startswith("vgg")}
CASES = [pytest.param(e, m, id=f"{e.name}-{m}",
                      marks=[pytest.mark.slow] if e.name in HEAVY else [])
         for e in ENTRIES for m in TO_3D_METHODS]


def side(entry) -> int:
    """The smallest cube side the entry takes (its declared 2D minimum, at least 4)."""
    return max(4, entry.capabilities.min_input_size)


def build_2d(entry, in_channels: int = 1):
    return entry.factory(in_channels=in_channels, spatial_dims=2, pretrained="none")


@pytest.mark.parametrize("entry,method", CASES)
def test_every_2d_backbone_converts_or_is_refused_by_name(entry, method) -> None:
    torch.manual_seed(0)
    backbone = build_2d(entry)
    if (entry.name, method) in REFUSED:
        with pytest.raises(ConfigError) as info:
            backbone_to_3d(backbone, method, name=entry.name, check_size=side(entry))
        assert entry.name in str(info.value) and "2.5d" in str(info.value)
        return
    converted = backbone_to_3d(backbone, method, name=entry.name, check_size=side(entry))
    assert converted.spatial_dims == 3 and converted.feature_dim == backbone.feature_dim
    check_layer_groups(entry.name, converted.body, converted.layer_groups())
    groups = [list(g.parameters()) for g in converted.layer_groups()]
    assert sum(map(len, groups)) == len([p for p in converted.body.parameters()
                                         if p.requires_grad])
    for p in groups[0]:
        p.requires_grad_(False)
    first = [p.detach().clone() for p in groups[0]]
    optimizer = torch.optim.SGD([p for p in converted.parameters() if p.requires_grad], lr=0.1)
    converted.train()
    n = side(entry)
    features = converted(torch.randn(2, 1, n, n, n))
    assert features.shape == (2, converted.feature_dim)
    assert torch.isfinite(features).all()
    features.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups[-1])
    optimizer.step()
    assert all(torch.equal(a, p) for a, p in zip(first, groups[0]))


@pytest.mark.parametrize("entry,method", [c for c in CASES if c.values[1] in ("i3d", "2.5d")
                                          and (c.values[0].name, c.values[1]) not in REFUSED])
def test_a_depth_constant_volume_gives_the_2d_output(entry, method) -> None:
    torch.manual_seed(0)
    backbone = build_2d(entry, in_channels=3).eval()
    with torch.no_grad():  # batch-norm statistics away from 0/1, so they count
        for m in backbone.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):  # noqa: SLF001
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    reference = copy.deepcopy(backbone)
    n = side(entry)
    image = torch.randn(2, 3, n, n)
    converted = backbone_to_3d(backbone, method, name=entry.name, check_size=n).eval()
    with torch.no_grad():
        expected = reference(image)
        got = converted(image.unsqueeze(2).expand(-1, -1, n, -1, -1).contiguous())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


@pytest.mark.skipif(offline_package_file("mobilenet_v2-b0353104.pth") is None,
                    reason="torchvision's ImageNet MobileNet-V2 is not installed offline")
@pytest.mark.parametrize("method", ["i3d", "2.5d"])
def test_imagenet_mobilenet_v2_keeps_its_output_on_depth_constant_volumes(method) -> None:
    entry = REGISTRIES.backbone.get("mobilenet_v2")
    backbone = entry.factory(in_channels=3, spatial_dims=2, pretrained="imagenet").eval()
    reference = copy.deepcopy(backbone)
    converted = backbone_to_3d(backbone, method, name="mobilenet_v2").eval()
    assert converted.load_report is not None and converted.expects_imagenet_norm
    image = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(
            converted(image.unsqueeze(2).expand(-1, -1, 28, -1, -1).contiguous()),
            reference(image), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel,stride,padding,groups",
                         [(3, 1, 1, 1), (3, 2, 1, 1), (7, 2, 3, 1), (1, 1, 0, 1), (3, 1, 1, 6),
                          (3, 2, 1, 6), (11, 4, 2, 1), ((1, 7), 1, (0, 3), 1),
                          ((7, 1), 1, (3, 0), 1)])
def test_each_acs_part_is_the_2d_convolution_in_its_plane(kernel, stride, padding,
                                                         groups) -> None:
    """A volume constant along the axis a part is flat on gives that part's channels the
    2D convolution of the plane it looks at, at every position (borders included): the
    axial part sees (height, width), the coronal (depth, width), the sagittal (depth,
    height)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 12, kernel, stride=stride, padding=padding, groups=groups)
    acs = ACSConv(conv)
    assert acs.weight is conv.weight  # the 2D weights themselves, no new parameter
    image = torch.randn(2, 6, 23, 19)
    plane = conv(image)
    assert [p[0] for p in acs.parts] == [0, 1, 2]
    for flat, (_, out_channels, _, _) in enumerate(acs.parts):
        sizes = [-1] * 5
        sizes[2 + flat] = 9
        volume = image.unsqueeze(2 + flat).expand(*sizes).contiguous()
        part = acs(volume)[:, slice(*out_channels)]
        for index in (0, -1):
            torch.testing.assert_close(part.select(2 + flat, index),
                                       plane[:, slice(*out_channels)], rtol=1e-4, atol=1e-4)


def test_acs_output_has_the_shape_of_the_cubic_convolution() -> None:
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    for size in [(9, 12, 15), (8, 8, 8), (1, 5, 7)]:
        out = ACSConv(conv)(torch.randn(2, 3, *size))
        assert out.shape[2:] == tuple((s + 2 - 3) // 2 + 1 for s in size)


def test_i3d_inflation_repeats_the_2d_kernel_along_depth_divided_by_its_size() -> None:
    conv = nn.Conv2d(2, 4, 5, padding=2)
    inflated = InflatedConv3d(conv)
    assert inflated.weight.shape == (4, 2, 5, 5, 5)
    torch.testing.assert_close(inflated.weight.sum(2), conv.weight)
    torch.testing.assert_close(inflated.weight[:, :, 0] * 5, conv.weight)


def test_acs_refuses_kernels_whose_sagittal_part_would_not_fit() -> None:
    with pytest.raises(ConfigError, match="i3d"):
        ACSConv(nn.Conv2d(3, 6, (3, 5), stride=(1, 2), padding=1))


def test_2d_functions_act_in_3d_on_volumes_only() -> None:
    volume = torch.randn(2, 3, 4, 6, 8)
    image = torch.randn(2, 3, 6, 8)
    with Functional3d("acs"):
        assert F.adaptive_avg_pool2d(volume, (1, 1)).shape == (2, 3, 1, 1, 1)
        torch.testing.assert_close(F.adaptive_avg_pool2d(volume, 1).flatten(1),
                                   volume.mean((2, 3, 4)))
        assert F.max_pool2d(volume, 2).shape == (2, 3, 2, 3, 4)
        assert volume.mean((2, 3)).shape == (2, 3)
        assert F.interpolate(volume, scale_factor=2.0, mode="bilinear").shape == (2, 3, 8, 12, 16)
        assert F.adaptive_avg_pool2d(image, 1).shape == (2, 3, 1, 1)  # 2D stays 2D
        assert image.mean((2, 3)).shape == (2, 3)
    assert volume.mean((2, 3)).shape == (2, 3, 8)  # nothing is left active


def test_padded_average_pooling_takes_maps_smaller_than_its_kernel() -> None:
    """As ``F.avg_pool2d`` does (Inception pools 1x1 maps with a padded 3x3 window)."""
    volume = torch.randn(2, 3, 2, 2, 2)  # every padded 3x3x3 window covers all 8 voxels
    total = volume.sum((2, 3, 4), keepdim=True)
    with Functional3d("acs"):
        counted = F.avg_pool2d(volume, 3, stride=1, padding=1)
        inside = F.avg_pool2d(volume, 3, stride=1, padding=1, count_include_pad=False)
    torch.testing.assert_close(counted, (total / 27).expand_as(volume))
    torch.testing.assert_close(inside, (total / 8).expand_as(volume))
    image = torch.randn(2, 3, 1, 1)  # i3d: a depth-constant volume gives the 2D output
    with Functional3d("i3d"):
        pooled = F.avg_pool2d(image.unsqueeze(2).expand(2, 3, 2, 1, 1), 3, stride=1, padding=1)
    torch.testing.assert_close(pooled, F.avg_pool2d(image, 3, stride=1, padding=1)
                               .unsqueeze(2).expand(2, 3, 2, 1, 1))


def test_to_3d_of_a_3d_backbone_or_an_unknown_method_is_refused() -> None:
    entry = REGISTRIES.backbone.get("basic_cnn")
    three_d = entry.factory(in_channels=1, spatial_dims=3, pretrained="none")
    with pytest.raises(ConfigError, match="converts 2D"):
        backbone_to_3d(three_d, "i3d", name="basic_cnn")
    with pytest.raises(ConfigError, match="acs, i3d, 2.5d"):
        backbone_to_3d(build_2d(entry), "3d", name="basic_cnn")


def test_converted_layers_keep_the_2d_parameter_names() -> None:
    entry = REGISTRIES.backbone.get("resnet18")
    names = [n for n, _ in build_2d(entry).body.named_parameters()]
    for method in ("acs", "i3d"):
        converted = backbone_to_3d(build_2d(entry), method, name="resnet18")
        assert [n for n, _ in converted.body.named_parameters()] == names
