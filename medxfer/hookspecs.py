"""Every hook medxfer calls, typed, one docstring each.

pluggy always calls hooks with keyword arguments: an implementation names the
arguments it wants (any subset, in any order) and receives exactly those. Never give
an implementation argument a default value: pluggy ignores it.

Two families of hooks live here:

* **Registration** hooks are called once per plugin when a registry is built (on demand,
  when a run or command needs it). Each receives a ``register`` callback:
  ``register(name, factory, *, description="", capabilities=None)``.
* **Lifecycle** hooks are called by the trainer. The trainer knows no plugin by name: the
  run's chosen strategy, domain-adaptation method and loggers (``tracking:``) are registered
  on the run's own plugin manager and receive these calls.

Epochs: the lifecycle hooks' ``epoch`` argument is the zero-based index of the epoch (as
``ctx.epoch``); what people read (the console, the report, ``metrics.json``'s
``history[].epoch`` and ``best_epoch``, TensorBoard, MLflow) counts from 1, and so do
``metrics["epoch"]`` and the ``epoch`` of :func:`medxfer_log_metrics`.

The documentation of every hook, with an example, is in ``docs/plugin_hooks.md``;
``tests/test_hookspecs.py`` fails when a hook is missing there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:  # pragma: no cover - imported for annotations only
    import torch
    import typer

    from medxfer.training.context import FitContext, LossTerm

PROJECT_NAME = "medxfer"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marks a plugin's hook implementations (``@medxfer.hookimpl``).
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

#: ``register(name, factory, *, description="", capabilities=None)``: adds one factory.
RegisterFn = Callable[..., None]


# ---------------------------------------------------------------------------------------
# Registration hooks
# ---------------------------------------------------------------------------------------


@hookspec
def medxfer_register_backbones(register: RegisterFn) -> None:
    """Register backbone factories.

    Call ``register(name, factory, description=..., capabilities=...)`` once per backbone.
    The factory is called as ``factory(in_channels=..., spatial_dims=..., pretrained=...,
    **kwargs)`` with the config's extra keys as ``kwargs`` and returns a
    :class:`medxfer.Backbone`; a segmentation factory also takes ``num_classes`` and
    returns a :class:`medxfer.SegmentationModel`.

    ``capabilities`` (a :class:`medxfer.BackboneCapabilities` or a dict of its fields)
    declares what the backbone does with its default options: ``spatial_dims`` (2 and/or
    3), ``min_input_size`` and ``input_multiple`` (input sides), ``output`` (``features``
    or ``segmentation``; by default from the factory's signature), ``pretrained`` (the
    values it accepts: ``none``, ``file``, ``run``, ``imagenet``...) and ``weights`` (the
    files of each named source, a :class:`medxfer.WeightFiles`, so that ``medxfer plugins``
    can say which are on this machine). The registry refuses a ``spatial_dims`` the
    capabilities leave out before calling the factory. Invalid capabilities skip the
    plugin, naming it, as any registration error does.

    Args:
        register: Callback that adds one named factory to the backbone registry.
    """


@hookspec
def medxfer_register_strategies(register: RegisterFn) -> None:
    """Register transfer-strategy factories.

    Call ``register(name, factory, description=...)``. The factory receives the config's
    extra keys of ``strategy`` as keyword arguments and returns an object whose methods are
    lifecycle hook implementations (marked with ``medxfer.hookimpl``); the trainer registers
    that object on the run's plugin manager. Optional attributes: ``uses_pretrained``,
    ``freezes_backbone``, ``keeps_pretrained``, ``changes_trainable_parameters`` and
    ``describe()`` (see
    docs/plugin_hooks.md; :class:`medxfer.Strategy` sets the defaults).

    Args:
        register: Callback that adds one named factory to the strategy registry.
    """


@hookspec
def medxfer_register_domain_adaptation(register: RegisterFn) -> None:
    """Register domain-adaptation method factories.

    Same contract as :func:`medxfer_register_strategies`: the factory returns an object of
    lifecycle hook implementations, which sees source and target batches. Optional
    attributes (read with the accessors of :mod:`medxfer.plugin_kit.attributes`):
    ``describe()`` (name and options for the report), ``draws_target_batches = False``
    (the trainer then draws no target batches; the target loader is still in
    ``ctx.target_loader``), and ``restore_structure(model)`` (re-applies layer changes,
    such as per-domain batch norms, to a freshly built network so that ``medxfer
    predict`` can load the saved weights).

    Args:
        register: Callback that adds one named factory to the domain-adaptation registry.
    """


@hookspec
def medxfer_register_combiners(register: RegisterFn) -> None:
    """Register ensemble combiner factories.

    Call ``register(name, factory, description=...)``. The factory returns a combiner:
    ``combine(outputs)`` (also callable as ``combiner(outputs, weights=None)``) maps member
    probabilities shaped ``[E, N, C, *spatial]`` to ``[N, C, *spatial]`` summing to one over
    ``C``; an optional ``fit(val_outputs, val_targets, member_scores)`` is called first with
    validation data only (never test data), e.g. to learn weights or a stacking model.
    See docs/plugin_hooks.md for the optional ``describe()`` and ``supports_spatial``.

    Args:
        register: Callback that adds one named factory to the combiner registry.
    """


@hookspec
def medxfer_register_loggers(register: RegisterFn) -> None:
    """Register run-tracking loggers (TensorBoard, MLflow, ...).

    Call ``register(name, factory, description=...)``. A run's ``tracking:`` list names the
    loggers it uses (``[{name: tensorboard}]`` by default); the factory receives each
    entry's other keys as keyword arguments (checked against its signature before the run
    starts) and returns an object of lifecycle hook implementations, registered on the run's
    plugin manager of the main process: typically :func:`medxfer_log_metrics`,
    :func:`medxfer_log_summary` and :func:`medxfer_on_exception`. Raise
    :class:`medxfer.ConfigError` from the factory for an option or a missing optional
    package, naming ``tracking`` and what to do.

    Args:
        register: Callback that adds one named factory to the logger registry.
    """


@hookspec
def medxfer_register_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``medxfer`` command-line interface.

    Args:
        app: The root Typer application; use ``@app.command()`` or ``app.add_typer``.
    """


# ---------------------------------------------------------------------------------------
# Trainer lifecycle hooks
# ---------------------------------------------------------------------------------------


@hookspec
def medxfer_fit_start(ctx: FitContext) -> None:
    """Prepare the model before the optimizer is built.

    Called once after the model is built and moved to its device, before parameter groups
    are collected. Freeze layers here, swap normalisation layers, or snapshot the
    pretrained weights. When a run resumes, it is called again before the saved state is
    restored, so that the model has the same structure as when it was saved.

    Args:
        ctx: The run's fit context (model, config, device, epochs, shared state).
    """


@hookspec(firstresult=True)
def medxfer_parameter_groups(ctx: FitContext, base_lr: float) -> list[dict[str, Any]] | None:
    """Return the optimizer's parameter groups, or ``None`` to leave the default.

    The first implementation that returns a list wins. Each group is a dict as
    ``torch.optim`` expects it (``params``, optionally ``lr`` and ``weight_decay``) and
    may carry a ``name``. The default is one group of all trainable parameters.

    Args:
        ctx: The run's fit context.
        base_lr: The configured learning rate.

    Returns:
        A list of parameter groups, or ``None``.
    """


@hookspec
def medxfer_extra_parameter_groups(ctx: FitContext, base_lr: float) -> list[dict[str, Any]] | None:
    """Return parameter groups to add to the optimizer beside the model's, or ``None``.

    For trainable modules a plugin owns outside the network (DANN's domain
    discriminator). Every implementation's groups are appended to those of
    :func:`medxfer_parameter_groups`; they follow the learning-rate schedule like the rest.
    Called once, before a resumed run's optimizer state is restored.

    Args:
        ctx: The run's fit context.
        base_lr: The configured learning rate.

    Returns:
        A list of parameter groups (dicts as ``torch.optim`` expects them), or ``None``.
    """


@hookspec
def medxfer_epoch_start(ctx: FitContext, epoch: int) -> None:
    """Act at the start of each epoch (e.g. unfreeze one more layer group).

    ``ctx.optimizer`` is live here: a strategy that unfreezes parameters adds them with
    ``ctx.add_param_group(...)`` so the optimizer is updated in place.

    Args:
        ctx: The run's fit context.
        epoch: The zero-based index of the epoch about to run (``epoch + 1`` as people
            count it).
    """


@hookspec
def medxfer_extra_loss_terms(
    ctx: FitContext,
    batch: dict[str, Any],
    outputs: torch.Tensor,
    features: torch.Tensor,
    target_batch: dict[str, Any] | None,
    target_features: torch.Tensor | None,
    target_outputs: torch.Tensor | None,
) -> list[LossTerm] | None:
    """Return extra loss terms for this training step.

    The trainer adds them to the task loss as
    ``L_total = beta * L_new + alpha * sum(knowledge-retention terms) + sum(weight * other)``:
    a term whose ``role`` is ``"retention"`` (L2-SP, LwF) is the ``L_pre`` of the
    combined loss and is scaled by the config's ``loss.alpha``; other terms
    (domain-adaptation losses) are scaled by their own ``weight``. Each term is logged
    under its name.

    Args:
        ctx: The run's fit context.
        batch: The labelled (source) batch, with ``image`` and ``label`` tensors.
        outputs: The model's outputs for ``batch`` (logits).
        features: The backbone's pooled features for ``batch``.
        target_batch: A target-domain batch, when the run has a target and a
            domain-adaptation method (``image``; ``label`` only when ``data.target.labelled``).
            The network ran on it in the ``target`` domain (see :func:`medxfer.set_domain`).
        target_features: The backbone's pooled features for ``target_batch``.
        target_outputs: The model's outputs (logits) for ``target_batch``.

    Returns:
        A list of :class:`medxfer.LossTerm`, or ``None``.
    """


@hookspec
def medxfer_after_backward(ctx: FitContext, step: int) -> None:
    """Act after gradients are computed and before the optimizer steps.

    Gradients are unscaled here when AMP with a gradient scaler is in use.

    Args:
        ctx: The run's fit context.
        step: The global step index.
    """


@hookspec
def medxfer_epoch_end(ctx: FitContext, epoch: int, metrics: dict[str, float]) -> None:
    """Act at the end of each epoch, after validation.

    Args:
        ctx: The run's fit context.
        epoch: The zero-based index of the epoch that ended (``metrics["epoch"]`` is
            ``epoch + 1``).
        metrics: Training losses and validation metrics of this epoch, by name; an
            implementation may add numbers, which go to the history in ``metrics.json``
            and to every logger (:func:`medxfer_log_metrics` comes after all of these).
    """


@hookspec
def medxfer_log_metrics(ctx: FitContext, epoch: int, metrics: dict[str, Any]) -> None:
    """Record one epoch's metrics (a logger's hook).

    Called after every :func:`medxfer_epoch_end` implementation has run, whatever the
    order the plugins were registered in, so ``metrics`` holds what plugins added there.
    Only the main process of a distributed run calls it. Name the values with
    :func:`medxfer.metric_tag` (``val/auc``, ``train/loss``) to match the built-in
    loggers. Treat ``metrics`` as read-only.

    Args:
        ctx: The run's fit context.
        epoch: The number of the epoch, counted from 1 as people count it (the same as
            ``metrics["epoch"]``): use it as the step.
        metrics: The epoch's training losses, loss terms, validation metrics, ``lr``,
            ``seconds`` (training time so far) and what plugins added, by name.
    """


@hookspec
def medxfer_log_summary(ctx: FitContext, summary: dict[str, Any]) -> None:
    """Record the finished run (a logger's hook): called once, after the final evaluation.

    ``summary`` is what ``metrics.json`` holds: ``val`` and ``test`` metrics (per class too:
    ``dice_<class>`` for segmentation; a classifier's ``confusion_matrix`` with
    ``class_names``), ``ci95``, ``best_epoch`` (counted from 1), ``history`` and the run's
    facts. :func:`medxfer.summary_metrics` flattens it to numbers by tag (``test/auc``,
    ``test/recall_<class>``) and :func:`medxfer.hyperparameters` gives the resolved
    config's values by dotted key. Close files and connections here; when training or the
    evaluation fails, :func:`medxfer_on_exception` is called instead.

    Args:
        ctx: The run's fit context (``ctx.config``, ``ctx.run_dir``).
        summary: The run's summary, as written to ``metrics.json``; read-only.
    """


@hookspec
def medxfer_fit_end(ctx: FitContext) -> None:
    """Act once after the last epoch, before the final evaluation.

    Recompute statistics here (AdaBN) or restore temporary changes.

    Args:
        ctx: The run's fit context.
    """


@hookspec
def medxfer_on_exception(ctx: FitContext, exception: BaseException) -> None:
    """Clean up when training or the final evaluation fails or is interrupted (Ctrl-C);
    the exception is re-raised after.

    Args:
        ctx: The run's fit context.
        exception: What was raised.
    """
