"""``ensemble.members > 1``: one run trains a deep ensemble and reports it as one model.

Member ``k`` is an ordinary run in ``RUN/members/m<k>`` with the training seed
``train.seed * members + k`` (its own checkpoints, report and resume; the members share the
run's ``cache/``). Once every member has finished, their selected networks become one
:class:`~medxfer.models.EnsembleNetwork` (class probabilities averaged; regression outputs
averaged), which is evaluated exactly as a single network is: the decision threshold chosen
on validation, test metrics with bootstrap CIs, ``predictions.csv``, figures and the report,
plus a table of the members. ``RUN/model.safetensors`` holds every member, so
``medxfer predict``, ``export``, ``ensemble`` and MONAI Label use the run as any other.

On ``--resume`` finished members are kept, a member with a checkpoint continues from it and
the others start; then the ensemble is evaluated again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medxfer import report as R
from medxfer.config import EnsembleConfig, RunConfig, load_config, write_resolved_config
from medxfer.data import load_data
from medxfer.errors import CheckpointError, ConfigError
from medxfer.models import EnsembleNetwork
from medxfer.planning.plan import read_plan
from medxfer.plugins import Registries
from medxfer.progress import format_duration, write_line
from medxfer.tasks import task_of
from medxfer.training import distributed as D
from medxfer.training.amp import resolve_device, resolve_precision
from medxfer.training.checkpoints import BEST_SIDECAR, BEST_WEIGHTS, LAST_STATE, save_model
from medxfer.training.loaders import make_loader
from medxfer.training.seeding import seed_everything
from medxfer.training.trainer import FitResult
from medxfer.workflows.predict import load_selected_weights
from medxfer.workflows.run_setup import (
    resolve_run_config,
    resolve_tta_axes,
    splits_text,
    write_splits,
)
from medxfer.workflows.single_run import train_single

MEMBERS_DIR = "members"
_SPLITS = ("val", "test")


def member_seed(config: RunConfig, k: int) -> int:
    """The training seed of member ``k``: ``train.seed * members + k``, so that the
    ensembles of seeds 0, 1, 2, ... share no member."""
    return config.train.seed * config.ensemble.members + k


def member_config(config: RunConfig, k: int) -> RunConfig:
    """The config member ``k`` trains with: the run's, with its own seed and one network."""
    train = config.train.model_copy(update={"seed": member_seed(config, k)})
    return config.model_copy(update={"train": train, "ensemble": EnsembleConfig()})


def member_dirs(run_dir: Path, members: int) -> list[Path]:
    """``RUN/members/m0``, ``m1``, ... ."""
    return [Path(run_dir) / MEMBERS_DIR / f"m{k}" for k in range(members)]


def member_state(path: Path) -> str:
    """``done`` (metrics and report written), ``resume`` (a training checkpoint) or ``new``."""
    if all((path / name).is_file() for name in ("metrics.json", "report.html", BEST_WEIGHTS)):
        return "done"
    if (path / LAST_STATE).is_file():
        return "resume"
    return "new"


def run_deep_ensemble(config: RunConfig, run_dir: Path, *, registries: Registries,
                      resume: bool, progress: bool) -> dict[str, Any]:
    """Train every member of ``config.ensemble`` (or continue it), then evaluate and report
    the ensemble in ``run_dir``. Called by :func:`medxfer.workflows.run.run_pipeline`.

    Returns:
        The summary written to ``run_dir/metrics.json``.
    """
    main = D.is_main()
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_resolved_config(config, run_dir)
    dirs = member_dirs(run_dir, config.ensemble.members)
    limit = config.ensemble.time_limit
    spent: list[float] = []  # seconds each member took (finished ones, in order)
    for k, path in enumerate(dirs):
        state = D.from_rank_zero(member_state(path) if main else None)
        if state == "done":
            spent.append(D.from_rank_zero(member_seconds(path) if main else None))
            continue
        next_one = sum(spent) / len(spent) if spent else 0.0  # at the mean time so far
        if limit is not None and state == "new" and sum(spent) + next_one > limit:
            dirs = dirs[:k]  # the next member would not fit: the ensemble is those trained
            if progress and main:
                write_line(f"ensemble.time_limit: {k} of up to {config.ensemble.members} "
                           f"members trained; another would take about "
                           f"{format_duration(next_one)} and "
                           f"{format_duration(max(limit - sum(spent), 0.0))} are left")
            break
        if progress and main:
            from rich.console import Console

            Console(stderr=True, markup=False, emoji=False).print(  # a path, read as is
                f"ensemble member {k + 1}/{len(dirs)} (seed {member_seed(config, k)}): {path}",
                highlight=False)
        resume_member = state == "resume"
        member = member_config(config, k)
        if limit is not None:  # a member may not take more than the time left
            own = member.train.time_limit
            if resume_member:  # the limit it started with (its checkpoint counts the time)
                own = load_config(path / "config.yaml").train.time_limit
            else:
                left = max(limit - sum(spent), 1.0)
                own = left if own is None else min(own, left)
            member = member.model_copy(update={"train": member.train.model_copy(
                update={"time_limit": own})})
        member = resolve_run_config(member, path, resume_member)
        tic = time.perf_counter()
        train_single(member, path, registries=registries, resume=resume_member,
                     progress=progress, cache_dir=run_dir / "cache")
        spent.append(D.from_rank_zero(time.perf_counter() - tic))
    return evaluate_deep_ensemble(config, run_dir, dirs, registries=registries)


def member_seconds(path: Path) -> float:
    """The seconds a finished member took (its ``fit_wall_seconds``, or its training time)."""
    try:
        summary = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0.0
    return float(summary.get("fit_wall_seconds") or summary.get("train_seconds") or 0.0)


def evaluate_deep_ensemble(config: RunConfig, run_dir: Path, dirs: list[Path], *,
                           registries: Registries) -> dict[str, Any]:
    """Build the ensemble of the finished members in ``dirs``, save it as the run's model
    and evaluate and report it like a single network.

    Raises:
        ConfigError: when a member was trained on other cases than the run's data gives.
        CheckpointError: when a member's outputs are missing or do not fit its network.
    """
    main = D.is_main()
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    seed_everything(config.train.seed, deterministic=config.train.deterministic)
    facts = D.from_rank_zero(read_members(dirs) if main else None)
    sidecar = dict(facts[0]["sidecar"])
    bundle = load_data(config, imagenet_norm=bool(sidecar.get("imagenet_norm")),
                       cache_dir=run_dir / "cache")
    text = splits_text(bundle.cases)
    stale = next((path for path, member in zip(dirs, facts) if member["splits"] != text), None)
    if stale is not None:  # every rank has the same facts and data: all raise together
        raise ConfigError(
            f"ensemble member {str(stale)!r} was trained on other cases than "
            f"{str(config.data.path)!r} gives now (its splits.csv differs); was the data "
            "changed since? Start the run again in a new --output folder")
    if main:
        write_splits(run_dir / "splits.csv", bundle.cases)

    device = D.worker_device(config.train.device) if D.is_active() \
        else resolve_device(config.train.device)
    precision = resolve_precision(config.train.amp, device)
    tta_axes = resolve_tta_axes(config, bundle.spatial_dims)
    kwargs = {**config.model.backbone.kwargs, "pretrained": "none"}
    task = task_of(config)
    networks = [task.build_network(config, registries, bundle, kwargs)[0] for _ in dirs]
    for net, path in zip(networks, dirs):
        net.tta_axes = list(tta_axes)
        if main:
            load_selected_weights(net, path)
    model = EnsembleNetwork(networks).to(device)
    D.broadcast_state(model)

    seeds = [member_seed(config, k) for k in range(len(dirs))]
    info = ensemble_info(config, run_dir, dirs, facts, seeds)
    if main:
        save_model(run_dir, model, {**sidecar, "ensemble": {"members": len(dirs), "seeds": seeds}})

        labels = [f"m{k} (seed {s})" for k, s in enumerate(seeds)]
        (run_dir / "figures").mkdir(parents=True, exist_ok=True)
        R.plot_member_training_curves(
            {label: f["history"] for label, f in zip(labels, facts)},
            run_dir / "figures" / "training_curves.png", metric=str(facts[0]["monitor"] or "val_loss"),
            best_epochs={label: f["best_epoch"] for label, f in zip(labels, facts)})
    first = facts[0]
    result = FitResult(history=[], best_epoch=0, best_score=float("nan"),
                       monitor=first["monitor"], train_seconds=info["train_seconds_sum"])
    run_info = {
        "backbone": config.model.backbone.name, "strategy": first["strategy"],
        "pretrained": first["pretrained"], "load_report": first["load_report"],
        "device": str(device), "precision": precision.describe(),
        "data_source": bundle.source,
        "fit_wall_seconds": float(sum(f["fit_wall_seconds"] for f in facts)),
        "best_epoch": None, "epochs_run": None, "stopped_early": None, "history": [],
        "ensemble": info,
    }
    if first["random_start"]:
        run_info["random_start"] = True
    plan = read_plan(run_dir)
    if plan is not None:
        run_info["plan"] = plan
    val_loader = make_loader(bundle.val, config, train=False, device=device)
    test_loader = make_loader(bundle.test, config, train=False, device=device)
    loss_fn = task.loss(config, bundle.train_labels, bundle.num_classes, device)
    return task.evaluate_and_report(config, run_dir, model, bundle, result, run_info,
                                    val_loader=val_loader, test_loader=test_loader,
                                    device=device, precision=precision, loss_fn=loss_fn)


def read_members(dirs: list[Path]) -> list[dict[str, Any]]:
    """What the report needs from each finished member folder.

    Raises:
        CheckpointError: naming the member folder whose outputs are missing or unreadable.
    """
    facts = []
    for path in dirs:
        try:
            summary = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
            sidecar = json.loads((path / BEST_SIDECAR).read_text(encoding="utf-8"))
            splits = (path / "splits.csv").read_text(encoding="utf-8")
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"ensemble member {str(path)!r} has no readable results ({exc}); run "
                "`medxfer run --resume` on the ensemble's folder to train it again") from None
        facts.append({
            "val": summary.get("val") or {}, "test": summary.get("test") or {},
            "threshold": summary.get("threshold"),
            "train_seconds": float(summary.get("train_seconds") or 0.0),
            "fit_wall_seconds": float(summary.get("fit_wall_seconds") or 0.0),
            "best_epoch": summary.get("best_epoch"), "epochs_run": summary.get("epochs_run"),
            "stopped_early": summary.get("stopped_early"),
            "history": summary.get("history") or [], "monitor": summary.get("monitor"),
            "strategy": summary.get("strategy"), "pretrained": summary.get("pretrained"),
            "load_report": summary.get("load_report"), "sidecar": sidecar, "splits": splits,
            "random_start": bool(summary.get("random_start")),
        })
    return facts


def ensemble_info(config: RunConfig, run_dir: Path, dirs: list[Path],
                  facts: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """The ``ensemble`` entry of ``metrics.json``: how it combines, and every member's
    seed, folder, training facts and metrics, with the members' mean."""
    members = []
    for k, (path, seed, fact) in enumerate(zip(dirs, seeds, facts)):
        members.append({"label": f"m{k}", "seed": seed,
                        "run": str(path.relative_to(run_dir)).replace("\\", "/"),
                        "train_seconds": fact["train_seconds"], "best_epoch": fact["best_epoch"],
                        "epochs_run": fact["epochs_run"], "threshold": fact["threshold"],
                        "val": fact["val"], "test": fact["test"]})
    mean: dict[str, dict[str, float]] = {}
    for split in _SPLITS:
        keys = [k for k, v in facts[0][split].items() if isinstance(v, (int, float))]
        values = {k: [f[split].get(k) for f in facts] for k in keys if k != "n"}
        mean[split] = {k: float(np.mean(v)) for k, v in values.items()
                       if all(isinstance(x, (int, float)) for x in v)}
    combine = "mean of the members' class probabilities" \
        if task_of(config).labels_are_classes else "mean of the members' outputs"
    return {"members": len(dirs), "members_most": config.ensemble.members,
            "time_limit": config.ensemble.time_limit, "combine": combine, "seeds": seeds,
            "train_seconds_sum": float(sum(f["train_seconds"] for f in facts)),
            "member_runs": members, "member_mean": mean}
