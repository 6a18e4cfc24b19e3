"""Contract test run on every registered segmentation plugin (a backbone factory taking
``num_classes``), so a new one is tested the moment it exists.

Each is built with random weights, one input channel and three classes, in every
dimensionality its registered capabilities declare, on a cube of the smallest side they
declare, wrapped by the core, and checked: logits and pooled features have the right
shapes, the encoder's layer groups partition its trainable parameters, encoder and decoder
views cover the network once, the state dict holds each tensor once under ``net.``, a deep
copy works, and a training step with the encoder frozen moves the decoder only, leaving
encoder weights and batch-norm statistics alone. A dimensionality it does not declare is
refused with an error naming it.
"""

from __future__ import annotations

import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import medxfer  # noqa: E402
from medxfer.errors import ConfigError, InputSizeError  # noqa: E402
from medxfer.models import SegmentationModel, build_segmentation_network  # noqa: E402

REGISTRIES = medxfer.build_registries(medxfer.create_plugin_manager())
ENTRIES = [e for e in REGISTRIES.backbone.entries()
           if e.capabilities and e.capabilities.output == "segmentation"]
NUM_CLASSES = 3

#: Options that keep each network tiny (a newcomer is built with its defaults). They may
#: lower what a network needs, never raise it above its declared (default) minimum.
OPTIONS: dict[str, dict[str, object]] = {
    "unet": {"encoder_depth": 3, "decoder_channels": (16, 8, 8)},
    "unetplusplus": {"encoder_depth": 3, "decoder_channels": (16, 8, 8)},
    "fpn": {"encoder_depth": 3, "decoder_pyramid_channels": 16,
            "decoder_segmentation_channels": 32},
    "deeplabv3plus": {"encoder_depth": 3, "decoder_channels": 16},
    "monai_unet": {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1},
    "dynunet": {"depth": 3, "filters": 8},
    "segresnet": {"init_filters": 8, "blocks_down": (1, 1, 1)},
    "swinunetr": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (3, 3, 3, 3)},
    "resnet_unet": {"decoder_channels": (16, 8, 8, 8, 8)},
}


def smallest_side(entry) -> int:
    """The smallest side the entry declares, a multiple of its declared multiple."""
    caps = entry.capabilities
    return -(-caps.min_input_size // caps.input_multiple) * caps.input_multiple


def build(entry, spatial_dims: int, **options: object) -> SegmentationModel:
    """Build with random weights (tiny options unless others are given)."""
    options = options or OPTIONS.get(entry.name, {})
    model = entry.factory(in_channels=1, spatial_dims=spatial_dims, num_classes=NUM_CLASSES,
                          pretrained="none", **options)
    assert isinstance(model, SegmentationModel)
    return model


def ids(tensors) -> list[int]:
    return [id(t) for t in tensors]


def check_contract(model: SegmentationModel, side: int, spatial_dims: int) -> None:
    assert (model.spatial_dims, model.in_channels, model.num_classes) == (spatial_dims, 1,
                                                                         NUM_CLASSES)
    assert model.load_report is None and model.expects_imagenet_norm is False
    network = build_segmentation_network(model)
    net, encoder, decoder = network.net, network.backbone, network.head

    # Encoder groups partition the encoder's trainable parameters.
    groups = [ids(g.parameters()) for g in encoder.layer_groups()]
    assert len(groups) >= 2 and all(groups), "at least two groups, none empty"
    grouped = [i for g in groups for i in g]
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    trainable = {id(p) for p in encoder.parameters() if p.requires_grad}
    assert trainable == set(grouped)

    # Encoder and decoder views cover the network's parameters once.
    enc_ids, dec_ids = set(ids(encoder.parameters())), set(ids(decoder.parameters()))
    assert not enc_ids & dec_ids
    assert enc_ids | dec_ids == set(ids(net.parameters()))

    # The state dict holds each tensor once, all under ``net.``.
    state = network.state_dict(keep_vars=True)
    assert all(k.startswith("net.") for k in state)
    assert len(set(ids(state.values()))) == len(state)

    shape = (side,) * spatial_dims
    assert side % model.size_divisor == 0, "the declared side fits the tiny options too"
    torch.manual_seed(0)
    x = torch.randn(2, 1, *shape)
    network.eval()
    with torch.no_grad():
        logits, features = network.forward_features(x)
        copied = copy.deepcopy(network)
        _, copied_features = copied.forward_features(x)
        alone = encoder(x)
    assert logits.shape == (2, NUM_CLASSES, *shape)
    assert features.shape == (2, model.feature_dim) and torch.isfinite(features).all()
    assert torch.allclose(alone, features, atol=1e-5)
    assert torch.allclose(copied_features, features, atol=1e-5)

    # A step with the encoder frozen moves the decoder only.
    medxfer.freeze(encoder)
    network.train()
    before_enc = [t.detach().clone() for t in (*encoder.parameters(), *encoder.buffers())]
    before_dec = [p.detach().clone() for p in decoder.parameters()]
    optimizer = torch.optim.SGD([p for p in network.parameters() if p.requires_grad], lr=0.1)
    target = torch.randint(0, NUM_CLASSES, (2, *shape))
    torch.nn.functional.cross_entropy(network(x), target).backward()
    assert all(p.grad is None for p in encoder.parameters())
    optimizer.step()
    after_enc = [*encoder.parameters(), *encoder.buffers()]
    assert all(torch.equal(b, t) for b, t in zip(before_enc, after_enc, strict=True)), \
        "a frozen encoder tensor (weight or batch-norm statistic) changed"
    assert any(not torch.equal(b, p) for b, p in zip(before_dec, decoder.parameters()))


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_segmentation_contract(entry) -> None:
    for spatial_dims in entry.capabilities.spatial_dims:
        check_contract(build(entry, spatial_dims), smallest_side(entry), spatial_dims)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_undeclared_dimensions_are_refused_by_name(entry) -> None:
    for spatial_dims in {2, 3} - set(entry.capabilities.spatial_dims):
        with pytest.raises(ConfigError) as info:
            build(entry, spatial_dims)
        message = str(info.value)
        assert entry.name in message and f"{spatial_dims}D" in message, message
        with pytest.raises(ConfigError, match="use one of: " + ", ".join(
                REGISTRIES.backbone.builders_of(spatial_dims, "segmentation"))):
            REGISTRIES.backbone.create(entry.name, key="model.backbone", in_channels=1,
                                       spatial_dims=spatial_dims, num_classes=NUM_CLASSES)


@pytest.mark.slow
@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_declared_minimum_holds_for_the_default_options(entry) -> None:
    """With its default options, a network runs on its declared smallest input, and one
    declared multiple less (where that is still a size) is refused before it runs."""
    side, multiple = smallest_side(entry), entry.capabilities.input_multiple
    for spatial_dims in entry.capabilities.spatial_dims:
        network = build_segmentation_network(
            entry.factory(in_channels=1, spatial_dims=spatial_dims, num_classes=2,
                          pretrained="none")).eval()
        with torch.no_grad():
            assert network(torch.randn(1, 1, *(side,) * spatial_dims)).shape[1] == 2
            if side > multiple:
                with pytest.raises(InputSizeError):
                    network(torch.randn(1, 1, *(side - multiple,) * spatial_dims))


def test_every_smp_architecture_is_covered() -> None:
    names = {e.name for e in ENTRIES}
    assert {"unet", "unetplusplus", "fpn", "deeplabv3plus"} <= names
