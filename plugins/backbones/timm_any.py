"""Any timm model as a backbone: ``{name: timm, model: resnet18, pretrained: imagenet}``."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import medxfer
from medxfer.api import BackboneCapabilities, ConfigError, PluginError, WeightFiles

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from medxfer.api import Backbone, WeightsSource

DEFAULT_MODEL = "resnet18"
#: Where timm's default weights of :data:`DEFAULT_MODEL` (``resnet18.a1_in1k``) are found:
#: its ``pretrained_cfg`` file name and Hugging Face hub id.
DEFAULT_WEIGHTS = WeightFiles(("resnet18_a1_0-d63eafa0.pth", "resnet18.a1_in1k.safetensors"),
                              hf_hub_id="timm/resnet18.a1_in1k")


def check_timm_model(model: str) -> None:
    """Refuse a name timm does not know, with close matches.

    Raises:
        ConfigError: naming the key, with "did you mean" from ``timm.list_models``.
    """
    import timm

    if timm.is_model(model):
        return
    close = difflib.get_close_matches(model.split(".")[0], timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"model.backbone.model: timm has no model {model!r}.{hint} List them "
                      "with python -c \"import timm; print(timm.list_models('*resnet*'))\".")


def timm_weights_source(model: nn.Module, name: str) -> WeightsSource | None:
    """Where timm publishes ``model``'s pretrained weights (its ``pretrained_cfg``).

    Cache folders are searched for the URL's file name and ``<hf model id>.safetensors``
    (e.g. ``resnet18.a1_in1k.safetensors``); the download is timm's own (Hugging Face hub,
    else the URL into torch hub's cache).
    """
    from medxfer.api import WeightsSource

    cfg: dict[str, Any] = dict(getattr(model, "pretrained_cfg", None) or {})
    url, hub_id = cfg.get("url") or None, cfg.get("hf_hub_id") or None
    if not url and not hub_id:
        return None
    names = []
    if url:
        names.append(url.rsplit("/", 1)[-1])
    if hub_id:
        names.append(hub_id.split("/")[-1] + ".safetensors")

    def download(dest_dir: Path) -> Path:
        if hub_id:
            from huggingface_hub import hf_hub_download

            try:
                return Path(hf_hub_download(hub_id, filename="model.safetensors"))
            except Exception:  # noqa: BLE001 - fall back to the URL, as timm does
                if not url:
                    raise
        # Looked up at call time, so tests can replace the download.
        return medxfer.download_url(url, dest_dir / names[0])

    return WeightsSource(f"timm:{name}", tuple(names), url=url or f"hf-hub:{hub_id}",
                         download=download)


def _layer_groups(model: nn.Module) -> list[nn.Module]:
    # timm's own coarse grouping (stem, stages...): by module when that covers every
    # parameter, else by parameter (a ViT's cls_token sits on the root module).
    from timm.models import group_modules, group_parameters

    from medxfer.api import LayerGroup, ParameterGroup, check_layer_groups

    try:
        matcher = model.group_matcher(coarse=True)
    except (AttributeError, NotImplementedError, TypeError):
        matcher = None
    if matcher:
        by_module = group_modules(model, matcher, return_values=True)
        groups: list[nn.Module] = [LayerGroup(f"group{i}", by_module[k])
                                   for i, k in enumerate(sorted(by_module))]
        try:
            check_layer_groups("timm", model, groups)
            return groups
        except PluginError:
            by_param = group_parameters(model, matcher, return_values=True)
            return [ParameterGroup(f"group{i}", by_param[k])
                    for i, k in enumerate(sorted(by_param))]
    return [LayerGroup(n, [m]) for n, m in model.named_children()
            if any(True for _ in m.parameters())]


def timm_backbone(in_channels: int = 3, spatial_dims: int = 2, pretrained: object = "imagenet",
                  model: str = DEFAULT_MODEL,
                  model_kwargs: dict[str, Any] | None = None) -> Backbone:
    """Any timm model (2D) without its classifier, via ``timm.create_model``.

    Args:
        in_channels: Input channels (``in_chans``).
        spatial_dims: Must be 2.
        pretrained: ``imagenet`` (timm's default weights of ``model``), ``none``, a file or
            a folder.
        model: A timm model name, optionally with a weights tag (``resnet18.a1_in1k``).
        model_kwargs: Extra keyword arguments for ``timm.create_model`` (``drop_rate``,
            ``img_size``...).
    """
    import timm
    from timm.models import model_entrypoint

    from medxfer.api import assemble_backbone, require_spatial_dims

    require_spatial_dims("timm", spatial_dims, (2,))
    check_timm_model(model)
    net = timm.create_model(model, pretrained=False, num_classes=0, in_chans=in_channels,
                            **(model_kwargs or {}))
    cfg = dict(net.pretrained_cfg or {})
    first_conv = cfg.get("first_conv")
    first_convs = [first_conv] if isinstance(first_conv, str) else list(first_conv or [])
    filter_fn = getattr(sys.modules[model_entrypoint(model.split(".")[0]).__module__],
                        "checkpoint_filter_fn", None)

    def key_map(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(filter_fn(state, net)) if filter_fn is not None else state

    groups = _layer_groups(net)
    return assemble_backbone(
        "timm", net, groups, net.num_features, in_channels=in_channels,
        spatial_dims=spatial_dims, pretrained=pretrained,
        imagenet=timm_weights_source(net, model), input_convs=[f"{c}.weight" for c in first_convs],
        key_map=key_map)


@medxfer.hookimpl
def medxfer_register_backbones(register):
    # Capabilities of the default model; another model may need larger inputs.
    register("timm", timm_backbone,
             description="any timm model (option model: resnet18 by default, "
                         "convnext_tiny...)",
             capabilities=BackboneCapabilities(
                 spatial_dims=(2,), pretrained=("imagenet", "none", "file", "run"),
                 weights={"imagenet": DEFAULT_WEIGHTS}))
