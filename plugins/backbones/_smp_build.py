"""How the segmentation-models-pytorch plugins build their networks and fill their encoders.

Not an entry point: :mod:`medxfer_plugins.backbones.smp_segmentation` registers the
factories and imports this module when one is called, as it needs torch and smp.
"""

from __future__ import annotations

import difflib
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from medxfer.api import (
    OFFLINE_ENV,
    CheckpointError,
    ConfigError,
    LayerGroup,
    LoadReport,
    ParameterGroup,
    SegmentationModel,
    WeightsError,
    adapt_input_conv_weight,
    check_layer_groups,
    find_run_checkpoint,
    is_no_weights,
    load_into,
    load_pretrained,
    load_state_dict_file,
    require_spatial_dims,
    torchvision_source,
    wants_imagenet,
)
from medxfer_plugins.backbones._segmentation_names import ARCHITECTURES
from medxfer_plugins.backbones.mobilenet import VARIANTS as MOBILENET_VARIANTS

#: smp encoders that subclass a torchvision model: their ImageNet weights are torchvision's.
TORCHVISION_ENCODERS = ("mobilenet_v2", "resnet18", "resnet34", "resnet50", "resnet101",
                        "resnet152", "resnext50_32x4d", "resnext101_32x8d")
#: Where a segmentation run's checkpoint keeps the encoder.
RUN_ENCODER_PREFIX = "net.encoder."
_TRACE_SIZES = (64, 256)  # sides of the blank image traced to find the encoder's stages


# ---------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------


def check_encoder(encoder: str) -> None:
    """Refuse an encoder name smp does not know, with close matches.

    Raises:
        ConfigError: naming ``model.backbone.encoder``.
    """
    import segmentation_models_pytorch as smp
    import timm

    names = smp.encoders.get_encoder_names()
    if encoder in names or (encoder.startswith("tu-") and timm.is_model(encoder[3:])):
        return
    choices = names + [f"tu-{n}" for n in timm.list_models()]
    close = difflib.get_close_matches(encoder, choices, n=5, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(
        f"model.backbone.encoder: segmentation-models-pytorch has no encoder {encoder!r}.{hint} "
        "Use an smp encoder name (mobilenet_v2, resnet34, efficientnet-b0...) or "
        "'tu-<timm model>'; list them with python -c \"import segmentation_models_pytorch as "
        "smp; print(smp.encoders.get_encoder_names())\".")


def build_smp(architecture: str, *, in_channels: int, spatial_dims: int, num_classes: int,
              encoder: str, pretrained: object, encoder_depth: int,
              **decoder: Any) -> SegmentationModel:
    """Build smp's ``architecture`` (a key of :data:`ARCHITECTURES`), ``**decoder`` being
    its own keyword arguments, and fill its encoder as ``pretrained`` asks.

    Raises:
        ConfigError: for 3D data, an unknown encoder or options smp refuses.
        WeightsError, CheckpointError: when the weights cannot be found or do not fit.
    """
    import segmentation_models_pytorch as smp

    require_spatial_dims(architecture, spatial_dims, (2,))
    check_encoder(encoder)
    try:
        net = getattr(smp, ARCHITECTURES[architecture])(
            encoder_name=encoder, encoder_depth=encoder_depth, encoder_weights=None,
            in_channels=in_channels, classes=num_classes, **decoder)
    except (ValueError, KeyError, TypeError, AssertionError, NotImplementedError) as exc:
        detail = str(exc) or f"{type(exc).__name__} in smp or timm (an option the encoder lacks)"
        raise ConfigError(f"model.backbone: {architecture} with encoder {encoder!r} and "
                          f"encoder_depth {encoder_depth}: {detail}") from None
    if encoder == "mobilenet_v2":  # stages deeper than encoder_depth would run for nothing
        net.encoder.features = net.encoder.features[:MOBILENET_VARIANTS[encoder][1][encoder_depth]]
    report, imagenet_norm = load_encoder_weights(
        net.encoder, pretrained, name=f"{architecture}/{encoder}", encoder=encoder,
        in_channels=in_channels, depth=encoder_depth)
    groups = encoder_layer_groups(net.encoder, encoder, in_channels, encoder_depth)
    check_layer_groups(architecture, net.encoder, groups)
    return SegmentationModel(
        net, encoder_groups=groups, encoder_path=[net.encoder],
        feature_dim=net.encoder.out_channels[-1], spatial_dims=2, in_channels=in_channels,
        num_classes=num_classes, load_report=report, expects_imagenet_norm=imagenet_norm,
        size_divisor=int(getattr(net.encoder, "output_stride", 2 ** encoder_depth)))


# ---------------------------------------------------------------------------------------
# Layer groups
# ---------------------------------------------------------------------------------------


def encoder_layer_groups(encoder: nn.Module, name: str, in_channels: int,
                         depth: int) -> list[nn.Module]:
    """The encoder's stages by resolution, input to output (stride 2, 4, ... 2**depth).

    MobileNetV2 takes the stage boundaries of the ``mobilenet_v2`` classifier backbone; any
    other encoder is traced (:func:`traced_stages`). Parameters of modules the trace never
    reaches, or that compute deeper than ``depth`` for nothing, are frozen and left out.
    A module holding parameters of its own besides its children's (a layer scale, a
    position embedding) contributes those as a :class:`ParameterGroup`.
    """
    if name == "mobilenet_v2":
        bounds = MOBILENET_VARIANTS[name][1][:depth + 1]
        return [LayerGroup(f"features[{a}:{b}]", encoder.features[a:b])
                for a, b in zip(bounds, bounds[1:])]
    stages = traced_stages(encoder, in_channels, name)
    groups: list[list[nn.Module]] = [[] for _ in range(depth + 1)]
    for module in encoder.modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        stage = stages.get(id(module))
        if stage is None or stage > depth:
            for param in own:
                param.requires_grad_(False)
            continue
        mixed = any(True for child in module.children() for _ in child.parameters())
        unit = ParameterGroup(type(module).__name__, own) if mixed else module
        groups[stage].append(unit)
    return [LayerGroup(f"stride{2 ** i}", g) for i, g in enumerate(groups) if g]


def traced_stages(encoder: nn.Module, in_channels: int, name: str = "") -> dict[int, int]:
    """Stage (log2 of the output stride) of each module holding parameters, by ``id``.

    One forward pass on a blank 64x64 image (256x256 if the encoder refuses that) records
    each module's input and output side. A module's stage is that of its output, except:
    inside a block that lowers the resolution (an inverted residual's 1x1 expansion before
    its strided convolution) it is the innermost such block's; a module with no feature
    map out (a 1x1 squeeze-excitation branch) takes the stage of the one before it; stages
    never fall from input to output (an attention's spatial reduction takes the finer
    stage after it); a module that never runs but whose parameters a running ancestor
    reads (a relative position table) takes that ancestor's. Modules that never run at
    all (stages deeper than ``encoder_depth``, an unused head) get none.
    """
    for size in _TRACE_SIZES:
        try:
            sides = _trace_sides(encoder, in_channels, size)
            break
        except Exception as exc:  # noqa: BLE001 - e.g. a window size the image must fit
            error = exc
    else:
        raise ConfigError(f"model.backbone.encoder: cannot run encoder {name!r} on a "
                          f"{size}x{size} image to find its stages ({error}); choose another "
                          "encoder") from error
    parent = {id(c): id(m) for m in encoder.modules() if m is not encoder for c in m.children()}
    holders = {id(m) for m in encoder.modules() if any(True for _ in m.parameters(recurse=False))}

    def lineage(key: int) -> list[int]:  # the module, then its ancestors below the encoder
        keys = [key]
        while keys[-1] in parent:
            keys.append(parent[keys[-1]])
        return keys

    def own_stage(key: int) -> int | None:
        block = next((k for k in lineage(key)
                      if all(sides.get(k, (0, 0))) and sides[k][1] < sides[k][0]), key)
        side = sides.get(block, (None, None))[1]
        return max(0, round(math.log2(size / side))) if side else None

    stages: dict[int, int] = {}
    stage = 0
    for key in sides:  # in the order the modules finished
        if key in holders:
            found = own_stage(key)
            stage = stages[key] = stage if found is None else found
    for key in reversed(list(stages)):
        stage = stages[key] = min(stages[key], stage)
    for key in holders - sides.keys():
        reader = next((k for k in lineage(key) if k in sides), None)
        if reader is not None and own_stage(reader) is not None:
            stages[key] = own_stage(reader)
    return stages


def _trace_sides(encoder: nn.Module, in_channels: int,
                 size: int) -> dict[int, tuple[int | None, int | None]]:
    # Input and output side of each submodule, by id, in the order they finished.
    sides: dict[int, tuple[int | None, int | None]] = {}

    def record(module: nn.Module, args: tuple[object, ...], output: object) -> None:
        sides.setdefault(id(module), (_spatial_side(args[0] if args else None),
                                      _spatial_side(output)))

    handles = [m.register_forward_hook(record) for m in encoder.modules() if m is not encoder]
    training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            encoder(torch.zeros(1, in_channels, size, size))
    finally:
        for handle in handles:
            handle.remove()
        encoder.train(training)
    return sides


def _spatial_side(output: object) -> int | None:
    # The side of a square feature map: NCHW, NHWC, or tokens [N, side * side, C]. A list
    # (a whole encoder's feature pyramid) is none; a tuple counts by its first element.
    out = output[0] if isinstance(output, tuple) and output else output
    if not isinstance(out, torch.Tensor):
        return None
    side = 0
    if out.ndim == 4:
        side = out.shape[3] if out.shape[2] == out.shape[3] else (
            out.shape[2] if out.shape[1] == out.shape[2] else 0)
    elif out.ndim == 3 and math.isqrt(out.shape[1]) ** 2 == out.shape[1]:
        side = math.isqrt(out.shape[1])
    return side if side > 1 else None


# ---------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------


def load_encoder_weights(module: nn.Module, pretrained: object, *, name: str, encoder: str,
                         in_channels: int, depth: int) -> tuple[LoadReport | None, bool]:
    """Fill the smp encoder ``module`` (named ``name`` in messages) as ``pretrained`` asks.

    The first convolution's pretrained kernels are summed for one input channel, repeated
    and scaled for other counts.

    Returns:
        ``(load_report, expects_imagenet_norm)``.
    """
    module = _TorchLoading(module)
    input_convs = [f"{n}.weight" for n, m in module.named_modules()
                   if isinstance(m, nn.Conv2d) and m.in_channels == in_channels][:1]
    if wants_imagenet(pretrained) and encoder not in TORCHVISION_ENCODERS:
        return smp_imagenet_weights(module, name=name, encoder=encoder,
                                    in_channels=in_channels, depth=depth), True
    from_run = _load_segmentation_run(module, pretrained, input_convs)
    if from_run is not None:
        return from_run
    source = torchvision_source(name, encoder, "IMAGENET1K_V1") \
        if encoder in TORCHVISION_ENCODERS else None
    key_map = _timm_key_map(module) if encoder.startswith("tu-") else None
    return load_pretrained(module, pretrained, backbone=name, imagenet=source,
                           input_convs=input_convs, key_map=key_map)


class _TorchLoading(nn.Module):
    """The same tensors under the same names, loaded by torch's own ``load_state_dict``
    (smp encoders override it to drop classifier keys, and return nothing)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        for name, child in encoder.named_children():
            self.add_module(name, child)
        for name, param in encoder.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in encoder.named_buffers(recurse=False):
            self.register_buffer(name, buffer)


def smp_imagenet_weights(module: nn.Module, *, name: str, encoder: str, in_channels: int,
                         depth: int) -> LoadReport:
    """Load smp's own ImageNet weights of ``encoder`` (downloaded from the Hugging Face hub,
    by timm for ``tu-`` encoders) into ``module``, counting the tensors copied.

    Raises:
        WeightsError: when they cannot be had (offline, ``$MEDXFER_OFFLINE`` set, no
            ImageNet weights for this encoder), saying to pass a local file instead.
    """
    from segmentation_models_pytorch.encoders import get_encoder

    if os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        reason = f"downloads are switched off ({OFFLINE_ENV} is set)"
    else:
        try:
            pretrained = get_encoder(encoder, in_channels=in_channels, depth=depth,
                                     weights=True if encoder.startswith("tu-") else "imagenet")
        except Exception as exc:  # noqa: BLE001 - any hub or network error means the same
            reason = f"{type(exc).__name__}: {str(exc)[:300]}"
        else:
            return load_into(module, pretrained.state_dict(), source=f"imagenet:smp:{encoder}")
    raise WeightsError(
        f"no ImageNet weights for {name!r} on this machine: segmentation-models-pytorch could "
        f"not get them ({reason}). Fetch them once where there is internet (they land in the "
        "Hugging Face cache), or set model.backbone.pretrained to the path of a local weights "
        "file of the encoder (pretrained: /path/to/encoder.safetensors).")


def _load_segmentation_run(module: nn.Module, pretrained: object,
                           input_convs: Sequence[str]) -> tuple[LoadReport, bool] | None:
    # An earlier segmentation run keeps the encoder under ``net.encoder.``; classification
    # runs (``backbone.body.``) are left to load_pretrained.
    if not isinstance(pretrained, (str, os.PathLike)) or is_no_weights(pretrained) \
            or wants_imagenet(pretrained):
        return None
    run_dir = Path(pretrained).expanduser()
    checkpoint = find_run_checkpoint(run_dir) if run_dir.is_dir() else None
    if checkpoint is None:
        return None
    tensors = load_state_dict_file(checkpoint, error=CheckpointError)
    state = {k[len(RUN_ENCODER_PREFIX):]: v for k, v in tensors.items()
             if k.startswith(RUN_ENCODER_PREFIX)}
    if not state:
        return None
    target = module.state_dict()
    for key in input_convs:
        if key in state and key in target and state[key].shape[1] != target[key].shape[1]:
            state[key] = adapt_input_conv_weight(state[key], target[key].shape[1])
    sidecar = checkpoint.with_suffix(".json")
    norm = sidecar.is_file() and json.loads(sidecar.read_text("utf-8")).get("imagenet_norm")
    return load_into(module, state, source=f"run:{run_dir}"), norm is True


def _timm_key_map(module: nn.Module) -> Any:
    """Rename a plain timm checkpoint's keys as smp's ``tu-`` encoder holds them (under
    ``model.``, with timm's feature wrapper's first level flattened: ``stages_0``)."""
    target = set(module.state_dict())

    def rename(key: str) -> str:
        options = (key, f"model.{key}", "model." + key.replace(".", "_", 1))
        return next((k for k in options if k in target), key)

    return lambda state: {rename(k): v for k, v in state.items()}
