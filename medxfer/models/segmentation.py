"""The segmentation contract: what segmentation plugins return and the network the core runs.

A segmentation plugin (registered as a backbone whose factory takes ``num_classes``) builds
a whole encoder-decoder network from a library (segmentation-models-pytorch in 2D, MONAI
in 3D) and returns a :class:`SegmentationModel`: the network plus which of its modules
form the encoder, as ordered layer groups, so that every transfer strategy acts on the
encoder exactly as on a classifier backbone.

The core wraps it in a :class:`SegmentationNetwork`, which offers strategies the same
surface as :class:`medxfer.models.TransferNetwork`:

* ``backbone``: a view of the encoder (its layer groups; calling it returns pooled deepest
  features), and ``head``: a view of everything else (decoder and segmentation head).
  Both hold references to the network's own modules; only ``net`` is registered, so the
  state dict has each tensor once.
* ``forward_features(x) -> (logits [N, C, *spatial], pooled encoder features [N, F])``.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
from torch import nn

from medxfer.models.backbone import LoadReport


class SegmentationModel(nn.Module):
    """A whole segmentation network with its encoder described for transfer strategies.

    Args:
        net: The network: ``net(x) -> logits [N, num_classes, *spatial]`` for input
            ``[N, in_channels, *spatial]``.
        encoder_groups: The encoder's layer groups, input to output (modules of ``net``).
        encoder_path: Modules of ``net`` that, called one after the other on the input,
            compute the deepest encoder features (a module returning a list of feature
            maps, such as an smp encoder, counts as its last element). Used to run the
            encoder alone (e.g. a frozen copy of it for LwF).
        feature_dim: Channels of the deepest encoder features.
        spatial_dims: 2 or 3.
        in_channels: Input channels.
        num_classes: Output channels (classes including background).
        load_report: What loading pretrained encoder weights did, or ``None``.
        expects_imagenet_norm: Inputs should get ImageNet mean/std.
        size_divisor: Every spatial side of an input must be a multiple of this (the
            network's total downsampling); the core pads to it.
    """

    def __init__(self, net: nn.Module, *, encoder_groups: Sequence[nn.Module],
                 encoder_path: Sequence[nn.Module], feature_dim: int, spatial_dims: int,
                 in_channels: int, num_classes: int, load_report: LoadReport | None = None,
                 expects_imagenet_norm: bool = False, size_divisor: int = 1) -> None:
        super().__init__()
        self.net = net
        self.encoder_groups = list(encoder_groups)
        self.encoder_path = list(encoder_path)
        self.feature_dim = int(feature_dim)
        self.spatial_dims = int(spatial_dims)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.load_report = load_report
        self.expects_imagenet_norm = expects_imagenet_norm
        self.size_divisor = int(size_divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes, *spatial]``."""
        return self.net(x)


def _last(out: object) -> torch.Tensor:
    if isinstance(out, (list, tuple)):
        return out[-1]
    return out  # type: ignore[return-value]


def global_pool(features: torch.Tensor) -> torch.Tensor:
    """Average over every spatial axis: ``[N, F, *spatial] -> [N, F]``."""
    if features.ndim <= 2:
        return features
    return features.flatten(2).mean(dim=2)


class EncoderView(nn.Module):
    """The encoder of a segmentation network, for strategies and domain adaptation.

    It holds the network's encoder modules by reference: freezing it freezes them.
    Calling it runs the encoder path alone and returns pooled features ``[N, F]``.
    """

    def __init__(self, groups: Sequence[nn.Module], path: Sequence[nn.Module],
                 feature_dim: int, load_report: LoadReport | None) -> None:
        super().__init__()
        self.groups = nn.ModuleList(groups)
        self.path = nn.ModuleList(path)
        self.feature_dim = int(feature_dim)
        self.load_report = load_report

    def layer_groups(self) -> list[nn.Module]:
        """The encoder's layer groups, input to output."""
        return list(self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled deepest encoder features."""
        for module in self.path:
            x = _last(module(x))
        return global_pool(x)


class DecoderView(nn.Module):
    """Every module of a segmentation network outside its encoder (decoder and head)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - a view only
        raise RuntimeError("the decoder view is not callable on its own; call the network")


def complement_modules(root: nn.Module, inside: Sequence[nn.Module]) -> list[nn.Module]:
    """The largest submodules of ``root`` sharing no parameter or buffer with ``inside``.

    Together with ``inside`` they cover every parameter and buffer of ``root`` (a module
    that mixes both is split into its children; tensors held directly by such a module
    are returned wrapped in a :class:`_DirectTensors` view).
    """
    taken = {id(t) for m in inside for t in (*m.parameters(), *m.buffers())}
    inside_ids = {id(m) for m in inside}
    found: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        if id(module) in inside_ids:
            return
        tensors = [id(t) for t in (*module.parameters(), *module.buffers())]
        if not tensors:
            return
        if not any(t in taken for t in tensors):
            found.append(module)
            return
        direct = [p for p in module.parameters(recurse=False) if id(p) not in taken]
        if direct:
            found.append(_DirectTensors(direct))
        for child in module.children():
            visit(child)

    visit(root)
    return found


class _DirectTensors(nn.Module):
    """Parameters owned directly by a mixed module (e.g. a learned positional embedding)."""

    def __init__(self, params: Sequence[nn.Parameter]) -> None:
        super().__init__()
        self.params = nn.ParameterList(params)


class _Capture:
    """A forward hook keeping the last output of the encoder's deepest module.

    A plain object rather than a bound method, so that deep copies of the network
    (``copy.deepcopy``) capture into their own copy.
    """

    def __init__(self) -> None:
        self.features: torch.Tensor | None = None

    def __call__(self, _module: nn.Module, _args: object, output: object) -> None:
        self.features = _last(output)


class SegmentationNetwork(nn.Module):
    """The network the core trains for segmentation (same surface as ``TransferNetwork``).

    Args:
        model: What the segmentation plugin built.
    """

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.net = model.net
        self.spatial_dims = model.spatial_dims
        self.in_channels = model.in_channels
        self.out_features = model.num_classes
        self.size_divisor = model.size_divisor
        self.expects_imagenet_norm = model.expects_imagenet_norm
        encoder = EncoderView(model.encoder_groups, model.encoder_path, model.feature_dim,
                              model.load_report)
        decoder = DecoderView(complement_modules(model.net, model.encoder_groups))
        # Views, not children: the state dict holds each tensor once, under ``net.``.
        object.__setattr__(self, "backbone", encoder)
        object.__setattr__(self, "head", decoder)
        self._capture = _Capture()
        model.encoder_path[-1].register_forward_hook(self._capture)

    def layer_groups(self) -> list[nn.Module]:
        """Encoder layer groups (input to output) followed by the decoder."""
        return self.backbone.layer_groups() + [self.head]

    def compile_submodules(self, mode: str | None = None) -> None:
        """``torch.compile`` the plugin's network (``train.compile``) in ``mode`` (None:
        torch's default)."""
        self.net.compile(mode=mode)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, pooled deepest encoder features)``."""
        self._capture.features = None
        logits = self.net(x)
        features, self._capture.features = self._capture.features, None
        if features is None:  # pragma: no cover - the hook always fires in a forward
            raise RuntimeError("the encoder's last module did not run in the forward pass")
        return logits, global_pool(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, num_classes, *spatial]``."""
        return self.net(x)


def build_segmentation_network(model: SegmentationModel) -> SegmentationNetwork:
    """Wrap a plugin's :class:`SegmentationModel` for training."""
    return SegmentationNetwork(model)


def builds_segmentation(factory: object) -> bool:
    """Whether a backbone factory builds a segmentation network (it takes ``num_classes``)."""
    try:
        return "num_classes" in inspect.signature(factory).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
