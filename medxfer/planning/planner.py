"""``make_plan``: fingerprint a dataset, apply the rules, measure, and fit the time budget.

The order: the data rules (task, split, intensity), the geometry (2D, 3D or 2D slices;
input or patch size; batch), the model rules, the decision rules; then a short throughput
probe of the planned network at each candidate input size gives seconds per epoch, from
which the budget decides the input size, the epochs and whether a deep ensemble fits.
``train.time_limit`` holds the training budget, so a run whose epochs are slower than
measured still ends in time (:class:`medxfer.training.trainer.Trainer` lowers its epochs).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import torch

from medxfer.config import validate_config
from medxfer.data.inspect import summarize_dataset
from medxfer.errors import ConfigError
from medxfer.planning import rules as R
from medxfer.planning.fingerprint import Fingerprint, fingerprint
from medxfer.planning.plan import Plan
from medxfer.planning.probe import Probe, measure
from medxfer.plugins import Registries, build_registries
from medxfer.tasks import get_task

#: Data loading and augmentation on top of the probe's pure compute, per training step.
DATA_FACTOR = 1.25
#: Share of the budget kept back for what no estimate sees (a slower machine, disk).
MARGIN = 0.1
#: Fixed seconds of a run's end: bootstrap CIs, figures, report.
REPORT_SECONDS = 20.0


def parse_budget(text: str | float | int) -> float:
    """Seconds of a budget written ``90s``, ``15m``, ``1h``, ``1h30m`` or a number of seconds.

    Raises:
        ConfigError: for anything else, or a budget under a minute.
    """
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        import re

        value = str(text).strip().lower()
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m(?:in)?)?\s*"
                             r"(?:(\d+(?:\.\d+)?)s?)?", value)
        if not value or parts is None or not any(parts.groups()):
            raise ConfigError(f"--budget {text!r}: give a duration such as 15m, 90s, 1h or "
                              "1h30m")
        h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = 3600 * h + 60 * m + s
    if seconds < 60:
        raise ConfigError(f"--budget {text!r}: a plan needs at least a minute (one epoch, "
                          "its evaluation and the report)")
    return seconds


def resolve_plan_device(device: str) -> str:
    """``cpu`` or ``cuda`` (``auto``: CUDA when available)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r}: choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here; plan for cpu, or "
                          "make the plan on the machine that will run it")
    return device


def make_plan(path: str | os.PathLike[str], *, budget: float, device: str = "auto",
              registries: Registries | None = None, format: str = "auto",
              spent: float = 0.0,
              probe: Callable[..., Probe] = measure) -> Plan:
    """Plan a run on the dataset at ``path`` that ends within ``budget`` seconds.

    Args:
        path: A dataset in any layout ``medxfer data inspect`` reads.
        budget: Seconds the whole run may take (data, training, evaluation, report).
        device: ``auto``, ``cpu`` or ``cuda``.
        registries: Plugin registries (built from installed plugins when omitted).
        format: ``auto`` or a layout name (``data.format``).
        spent: Seconds of the budget already used (``medxfer run DATA`` plans inside it).
        probe: The throughput probe (replaceable in tests).

    Returns:
        The plan: a complete config and a reason per choice.

    Raises:
        DataError: when the data cannot be read or has no labels.
        ConfigError: for a bad budget or device.
    """
    tic = time.perf_counter()
    registries = registries or build_registries()
    device = resolve_plan_device(device)
    summary = summarize_dataset(path, format=format)
    fp = fingerprint(summary)
    plan = Plan()
    plan.summary.update(budget_seconds=round(budget), device=device,
                        made=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        machine=f"{os.cpu_count()} CPU cores"
                        + (f", {torch.cuda.get_device_name(0)}" if device == "cuda" else ""))
    plan.set("train.device", device, "where the probe measured and the run trains")
    plan.set("train.seed", 0, "seed 0; other seeds with --set train.seed=N")
    R.plan_data(plan, fp)
    dims = plan_geometry(plan, fp, device)
    R.plan_model(plan, fp, registries, device, dims)
    R.plan_decision(plan, fp)
    plan.set("eval.bootstrap", 1000, "1000 bootstrap resamples give the test metrics' 95% CIs")
    scan_seconds = time.perf_counter() - tic
    fit_budget(plan, fp, registries, budget=budget,
               spent=spent + time.perf_counter() - tic, data_seconds=2 * scan_seconds,
               probe=probe)
    plan.summary["fingerprint"] = fp.as_dict()
    plan.summary["plan_seconds"] = round(time.perf_counter() - tic, 1)
    validate_config(plan.config, source="the plan")  # a plan is always a valid config
    return plan


# ---------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------


def plan_geometry(plan: Plan, fp: Fingerprint, device: str) -> int:
    """Network dimensionality, input or patch size, batch and augmentation; returns the
    network's spatial dimensions."""
    task = get_task(fp.task)
    if task.labels_are_masks:
        return _segmentation_geometry(plan, fp, device)
    if fp.spatial_dims == 2:
        plan.set("data.augment_on", "batch", "augmentation on whole batches (cheap per item)")
        plan.set("data.augment.preset", "standard", "flips, small rotations and intensity "
                 "changes for 2D images")
        plan.set("train.batch_size", 64, "64 images per step (batch norm sees enough)")
        uniform = fp.min_size == fp.max_size
        if not uniform or max(fp.median_size) > R.MAX_2D_SIDE:
            side = min(R.round_to(max(fp.median_size), 32), R.MAX_2D_SIDE)
            plan.set("data.preprocess.image_size", [side, side],
                     f"images of {fp.min_size}..{fp.max_size} px: resized to one size, the "
                     f"median side rounded to 32 (at most {R.MAX_2D_SIDE})")
        plan.summary["size_candidates"] = _size_candidates(fp)
        return 2
    side_cap = R.MAX_3D_SIDE[device]
    plan.set("data.augment_on", "batch", "augmentation on whole batches (cheap per item)")
    plan.set("data.augment.ops", [{"name": "flip", "axes": [0, 1, 2]},
                                  {"name": "affine", "degrees": 10, "scale": 0.1}],
             "flips along every axis and small rotations/scalings for volumes")
    batch = 32 if max(fp.median_size) <= 32 else 8
    plan.set("train.batch_size", batch, f"{batch} volumes per step at this size")
    if fp.min_size != fp.max_size or max(fp.median_size) > side_cap:
        size = [min(R.round_to(s, 16), side_cap) for s in fp.median_size]
        plan.set("data.preprocess.image_size", size,
                 f"volumes of {fp.min_size}..{fp.max_size} voxels: resized to one size "
                 f"(the median, at most {side_cap} per side on {device})")
    return 3


def _size_candidates(fp: Fingerprint) -> list[list[int] | None]:
    """Input sizes the budget chooses from, largest first (``None``: as stored)."""
    if fp.min_size == fp.max_size and max(fp.median_size) < R.MIN_IMAGENET_SIDE:
        side = R.MIN_IMAGENET_SIDE
        return [[side] * 2, None]
    return [None]


def _segmentation_geometry(plan: Plan, fp: Fingerprint, device: str) -> int:
    """Patches, sliding windows, spacing and slicing for masks."""
    dims = fp.spatial_dims
    sizes = list(fp.median_size)
    if dims == 3 and fp.anisotropy > R.ANISOTROPY:
        axis = max(range(3), key=lambda a: fp.median_spacing[a])
        plan.set("data.slice_axis", axis,
                 f"anisotropic voxels (spacing {fp.median_spacing} mm, ratio "
                 f"{fp.anisotropy:.1f} > {R.ANISOTROPY}): a 2D network on slices across axis "
                 f"{axis}, the coarse one")
        sizes = [s for a, s in enumerate(sizes) if a != axis]
        dims = 2
    spacing = fp.json.get("spacing") or {}
    spacings_vary = any(hi > 1.1 * lo for lo, hi in zip(spacing.get("min") or [],
                                                         spacing.get("max") or []))
    if fp.spatial_dims == 3 and spacings_vary:
        plan.set("data.preprocess.spacing", [round(s, 3) for s in fp.median_spacing],
                 "voxel spacings differ between volumes: resampled to the median spacing")
    multiple = 32 if dims == 2 else 16
    cap = 256 if dims == 2 else R.MAX_3D_SIDE[device]
    patch = [min(R.round_to(s, multiple), cap) for s in sizes]
    plan.set("data.patch", {"size": patch, "samples_per_case": 2,
                            "pos_fraction": 0.7 if (fp.foreground_fraction or 1) < 0.1 else 0.5},
             f"random patches of the median size rounded to {multiple} (the network halves "
             "the size repeatedly), two per case, centred on foreground "
             f"{'70' if (fp.foreground_fraction or 1) < 0.1 else '50'}% of the time")
    plan.set("eval.sliding_window", {"roi_size": patch, "overlap": 0.5, "mode": "gaussian",
                                     "batch_size": 16 if dims == 2 else 4},
             "whole images evaluated with overlapping windows of the patch size")
    ops = [{"name": "flip", "axes": list(range(dims))},
           {"name": "affine", "prob": 0.3, "degrees": 10, "scale": 0.1, "translate": 0.0},
           {"name": "contrast", "prob": 0.3}]
    plan.set("data.augment.ops", ops, "flips, small rotations/scalings and contrast changes")
    if dims == 2:
        plan.set("data.augment_on", "batch", "augmentation on whole batches")
    batch = 32 if dims == 2 else 8
    plan.set("train.batch_size", batch, f"{batch} patches per step ({batch // 2} cases)")
    return dims


# ---------------------------------------------------------------------------------------
# the budget
# ---------------------------------------------------------------------------------------


def fit_budget(plan: Plan, fp: Fingerprint, registries: Registries, *, budget: float,
               spent: float, data_seconds: float, probe: Callable[..., Probe]) -> None:
    """Input size, epochs, ensemble members and ``train.time_limit`` from measured speed."""
    task = get_task(fp.task)
    kind = task.label_kind
    batch = int(plan.get("train.batch_size"))
    candidates = plan.summary.pop("size_candidates", [None])
    n_train, n_val = _split_sizes(fp, plan)
    n_test = max(sum(fp.cases.values()) - n_train - n_val, 0)
    items = n_train * _items_per_case(plan, fp)
    steps = max(1, math.ceil(items / batch)) if not task.labels_are_masks \
        else max(1, math.ceil(n_train * 2 / batch))
    eval_cases = n_val + n_test
    available = budget * (1 - MARGIN) - spent - data_seconds - REPORT_SECONDS
    probes: dict[str, Any] = {}
    chosen = None
    for size in candidates:
        config = validate_config(plan.config, source="the plan")
        input_size = _input_size(plan, fp, size)
        measured = probe(config, registries, in_channels=_channels(plan, fp),
                         num_classes=max(task.output_channels(fp.class_names), 1),
                         input_size=input_size, batch_size=batch)
        probes[str(size or "as stored")] = measured.as_dict()
        epoch = steps * measured.step_seconds * DATA_FACTOR + \
            _eval_seconds(task, n_val, measured, plan, fp)
        final = _eval_seconds(task, eval_cases, measured, plan, fp)
        train_budget = available - final
        epochs = R.target_epochs(kind, steps)
        chosen = (size, epochs, epoch, train_budget)
        if epochs * epoch <= train_budget:
            break
    size, epochs, epoch, train_budget = chosen
    if train_budget < epoch:
        raise ConfigError(
            f"--budget {budget:.0f}s is too short for this data on this machine: one epoch "
            f"takes about {epoch:.0f}s after {spent + data_seconds:.0f}s of reading and "
            f"planning; give at least {math.ceil((spent + data_seconds + epoch * 2 + REPORT_SECONDS) / 60)}m")
    if size is not None:
        plan.set("data.preprocess.image_size", size,
                 f"images of {fp.median_size} px upsampled to {size}: an ImageNet CNN halves "
                 f"its input five times, and the budget allows {epochs} epochs at this size")
    fits = int(train_budget // epoch)
    members = 1
    ensemble = task.supports_deep_ensembles and n_train <= R.ENSEMBLE_MAX_CASES and \
        fits >= epochs
    if ensemble:
        members = min(R.MAX_MEMBERS, fits // epochs)  # what the probe expects
        plan.set("ensemble.members", R.MAX_MEMBERS,
                 f"few training cases ({n_train}): a deep ensemble of up to "
                 f"{R.MAX_MEMBERS} networks (seeds differ), trained in turn while the next "
                 f"fits in the time (ensemble.time_limit); the probe expects time for "
                 f"{fits // epochs} full training(s)")
        plan.set("ensemble.time_limit", round(train_budget),
                 f"the members train within {round(train_budget)}s together, so the run "
                 "ends within the budget; how many fit is decided by the time the first "
                 "ones take, not by the probe alone")
    elif fits < epochs:
        epochs = max(1, fits)
    elif task.labels_are_masks and fits > epochs:
        epochs = min(R.EPOCH_BOUNDS[kind][1], fits)
    target = R.target_epochs(kind, steps)
    if epochs > target:
        how = (f"at least {R.TARGET_STEPS[kind]} optimiser steps ({steps} per epoch), and "
               f"masks get as many epochs as the budget allows, up to "
               f"{R.EPOCH_BOUNDS[kind][1]}: a segmentation network keeps improving with "
               "training where one network, not an ensemble, is planned")
    else:
        how = (f"about {R.TARGET_STEPS[kind]} optimiser steps ({steps} per epoch)"
               + (", as many as the budget allows" if epochs < target else ""))
    plan.set("train.epochs", epochs, how + f"; an epoch takes about {epoch:.0f}s here")
    limit = round(train_budget)
    plan.set("train.time_limit", limit,
             f"training stops within {limit}s" + (
                 " (a member: at most the ensemble's time left)" if ensemble else "")
             + " so the run ends within the budget; if epochs run slower than measured, "
             "fewer are run")
    most = R.EPOCH_BOUNDS[kind][1] if task.labels_are_masks else target
    if not ensemble and epochs < most:
        plan.set("train.max_epochs", most,
                 f"the budget, not the rule, set {epochs} epochs: if the first epochs run "
                 f"faster than the probe measured (it times a few steps, and a busy machine "
                 f"slows them), training raises them to what fits, up to {most}")
    plan.summary.update(probe=probes, estimate={
        "seconds_per_epoch": round(epoch, 1), "epochs": epochs, "members": members,
        "training_seconds": round(epochs * epoch * members),
        "reading_and_planning_seconds": round(spent + data_seconds),
        "evaluation_and_report_seconds": round(budget - spent - data_seconds - train_budget
                                               - budget * MARGIN),
        "margin_seconds": round(budget * MARGIN)})


def _split_sizes(fp: Fingerprint, plan: Plan) -> tuple[int, int]:
    if "train" in fp.cases:
        return fp.cases["train"], fp.cases.get("val", 0)
    total = sum(fp.cases.values())
    return int(round(0.7 * total)), int(round(0.15 * total))


def _items_per_case(plan: Plan, fp: Fingerprint) -> int:
    axis = plan.get("data.slice_axis")
    return fp.median_size[axis] if axis is not None else 1


def _channels(plan: Plan, fp: Fingerprint) -> int:
    pretrained = plan.get("model.backbone.pretrained")
    return 3 if pretrained == "imagenet" and fp.channels in (1, 3) else fp.channels


def _input_size(plan: Plan, fp: Fingerprint, size: list[int] | None) -> list[int]:
    patch = plan.get("data.patch.size")
    if patch:
        return list(patch)
    if size:
        return list(size)
    resized = plan.get("data.preprocess.image_size")
    return list(resized) if resized else list(fp.median_size)


def _eval_seconds(task: Any, cases: int, measured: Probe, plan: Plan, fp: Fingerprint) -> float:
    """Seconds to predict ``cases`` whole cases: batches of images, or sliding windows."""
    per_item = measured.forward_seconds / max(measured.batch_size, 1)
    if not task.labels_are_masks:
        return cases * per_item * 1.2
    roi = plan.get("eval.sliding_window.roi_size") or measured.input_size
    axis = plan.get("data.slice_axis")
    full = [s for a, s in enumerate(fp.median_size) if axis is None or a != axis]
    step = [max(1, int(r * 0.5)) for r in roi]
    windows = math.prod(max(1, math.ceil(max(f - r, 0) / s) + 1)
                        for f, r, s in zip(full, roi, step))
    slices = fp.median_size[axis] if axis is not None else 1
    return cases * slices * windows * per_item * 1.5

