"""The public API for plugin authors: everything a plugin imports from medxfer.

Plugins (medxfer's own in ``plugins/`` included) import from ``medxfer`` or
``medxfer.api`` only, never from the core's other modules, so that the core can be
reorganised without breaking them; ``tests/test_public_api.py`` checks it. The names are:

* the hook marker :data:`hookimpl` and the errors a plugin raises;
* the plugin bases :class:`Strategy`, :class:`DomainAdaptation`, :class:`FeatureDistance`
  and :class:`Combiner`, with :class:`NamedPlugin`, :class:`OptionChecks` and the option
  checks of each kind;
* the optional plugin attributes: one Protocol each (:class:`UsesPretrained`...) and the
  accessors the core reads them with (:func:`uses_pretrained`...);
* backbone capabilities (:class:`BackboneCapabilities`, :class:`WeightFiles`);
* what a backbone is built from: :class:`Backbone`, :class:`SegmentationModel`, layer
  groups, :func:`assemble_backbone`, the weight sources and loaders of
  :mod:`medxfer.weights`;
* what lifecycle hooks work with: :class:`FitContext`, :class:`LossTerm`, the freezing
  helpers and the domain switch (:data:`SOURCE`, :data:`TARGET`, :func:`set_domain`);
* what loggers record, named alike by all of them: :func:`metric_tag`,
  :func:`epoch_scalars`, :func:`summary_metrics`, :func:`hyperparameters`.

Names that need PyTorch are imported on first use (PEP 562), so ``import medxfer.api``
(and a plugin module that imports the bases at its top) does not import torch: listing
plugins and ``medxfer --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from medxfer.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    InputSizeError,
    MedxferError,
    MedxferWarning,
    PluginError,
    WeightsError,
)
from medxfer.hookspecs import hookimpl
from medxfer.plugin_kit.attributes import (
    OPTIONAL_FLAGS,
    ChangesTrainableParameters,
    Describes,
    DrawsTargetBatches,
    FitsOnValidation,
    FreezesBackbone,
    KeepsPretrained,
    RestoresStructure,
    SupportsSpatial,
    UsesPretrained,
    changes_trainable_parameters,
    describe_plugin,
    draws_target_batches,
    fit_on_validation,
    freezes_backbone,
    keeps_pretrained,
    plugin_flag,
    restore_network_structure,
    supports_spatial,
    uses_pretrained,
)
from medxfer.plugin_kit.backbone_factories import torchvision_variant
from medxfer.plugin_kit.capabilities import (
    OUTPUT_KINDS,
    USER_SOURCES,
    BackboneCapabilities,
    WeightFiles,
)
from medxfer.plugin_kit.combiner import (
    Combiner,
    as_member_probs,
    check_weight_option,
    combiner_option_error,
    member_weights,
    normalise,
)
from medxfer.plugin_kit.domain_adaptation import (
    DomainAdaptation,
    FeatureDistance,
    paired_features,
)
from medxfer.plugin_kit.options import (
    DOMAIN_ADAPTATION_OPTIONS,
    STRATEGY_OPTIONS,
    NamedPlugin,
    OptionChecks,
)
from medxfer.plugin_kit.strategy import Strategy, backbone_groups, backbone_name
from medxfer.plugin_kit.tracking import (
    epoch_scalars,
    hyperparameters,
    metric_tag,
    summary_metrics,
)
from medxfer.training.context import FitContext, LossTerm
from medxfer.weights_lookup import offline_package_file, weights_cache_dirs

#: Names that need PyTorch, by the module they come from; imported on first use.
_LAZY: dict[str, tuple[str, ...]] = {
    "medxfer.models": ("Backbone", "LoadReport", "SegmentationModel"),
    "medxfer.models.adapt": (
        "LayerGroup", "ParameterGroup", "adapt_input_conv_weight", "assemble_backbone",
        "check_layer_groups", "replace_input_conv", "require_min_input_size",
        "require_spatial_dims"),
    "medxfer.models.domain": (
        "DOMAINS", "SOURCE", "TARGET", "current_domain", "in_domain", "set_domain"),
    "medxfer.training.freezing": (
        "freeze", "is_frozen", "keep_frozen_norms_in_eval", "layer_group_name",
        "parameter_group", "trainable_parameters", "unfreeze",
        "ungrouped_trainable_parameters"),
    "medxfer.weights": (
        "OFFLINE_ENV", "RUN_CHECKPOINTS", "WeightsSource", "download_url",
        "find_run_checkpoint", "is_no_weights", "load_into", "load_pretrained",
        "load_state_dict_file", "sha256_of", "torchvision_source", "wants_imagenet"),
}
_LAZY_SOURCE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted([
    "BackboneCapabilities", "ChangesTrainableParameters", "CheckpointError", "Combiner",
    "ConfigError", "DataError",
    "DOMAIN_ADAPTATION_OPTIONS", "Describes", "DomainAdaptation", "DrawsTargetBatches",
    "FeatureDistance", "FitContext", "FitsOnValidation", "FreezesBackbone", "InputSizeError",
    "KeepsPretrained", "LossTerm", "MedxferError", "MedxferWarning", "NamedPlugin",
    "OPTIONAL_FLAGS", "OUTPUT_KINDS", "OptionChecks", "PluginError", "RestoresStructure",
    "STRATEGY_OPTIONS", "Strategy", "SupportsSpatial", "USER_SOURCES", "UsesPretrained",
    "WeightFiles", "WeightsError", "as_member_probs", "backbone_groups", "backbone_name",
    "changes_trainable_parameters", "check_weight_option", "combiner_option_error",
    "describe_plugin",
    "draws_target_batches", "epoch_scalars", "fit_on_validation", "freezes_backbone",
    "hookimpl", "hyperparameters", "keeps_pretrained", "member_weights", "metric_tag",
    "normalise", "offline_package_file", "paired_features", "plugin_flag",
    "restore_network_structure", "summary_metrics", "supports_spatial",
    "torchvision_variant", "uses_pretrained", "weights_cache_dirs", *_LAZY_SOURCE,
])


def __getattr__(name: str) -> Any:
    """Import a name that needs PyTorch from its module when it is first asked for.

    It is looked up again on every access (not cached here), so a test that replaces
    e.g. ``medxfer.weights.download_url`` is seen through this module too.
    """
    module = _LAZY_SOURCE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_SOURCE))
