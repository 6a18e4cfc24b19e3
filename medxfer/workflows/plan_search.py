"""``medxfer run DATA --search N``: successive halving over candidate plans, on validation.

The search takes :data:`SEARCH_SHARE` of the plan's training time. Every candidate
(:func:`medxfer.planning.search_space.candidate_plans`) trains a few epochs and is scored by
the plan's monitored validation metric; the better half goes on with twice the epochs,
until one is left (Jamieson & Talwalkar, AISTATS 2016; Li et al., Hyperband, JMLR 2018).
Test cases are never read. The winner's changes go into the plan with their reason, and
the training time left is fitted again (epochs, ensemble members, ``train.time_limit``).
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medxfer.config import validate_config
from medxfer.errors import ConfigError, TrainingError
from medxfer.planning.plan import Plan
from medxfer.planning.search_space import Candidate, candidate_plans
from medxfer.plugins import Registries
from medxfer.progress import format_duration, write_line

#: The share of the plan's training time the search may use.
SEARCH_SHARE = 0.4
#: A candidate's ``train.time_limit``: its epochs at the planned pace times this.
CANDIDATE_SLACK = 1.5

Fit = Callable[..., dict[str, Any]]


def search_plan(plan: Plan, count: int, *, registries: Registries, workdir: Path,
                fixed: list[str] | None = None, fit: Fit | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Compare up to ``count`` candidate plans by successive halving, change ``plan`` to
    the winner and fit its training into the time left.

    Args:
        plan: The plan (with its ``estimate``); changed in place.
        count: ``--search N``: how many candidates at most (at least 2).
        registries: Plugin registries.
        workdir: A scratch folder for the candidates' runs (removed afterwards).
        fixed: Dotted keys set by ``--set``, which no candidate changes.
        fit: Trains one candidate config in a folder and returns its validation score
            (:func:`medxfer.workflows.single_run.fit_for_validation`; replaceable in tests).
        progress: Write a line per candidate and round.

    Returns:
        The search record (also put in ``plan.summary["search"]``): the candidates, each
        round's epochs and scores, the winner and the seconds spent.

    Raises:
        ConfigError: when ``count`` is below 2, or the budget leaves no time for one epoch
            of every candidate (naming ``--search`` and what to give instead).
    """
    if count < 2:
        raise ConfigError(f"--search {count}: give at least 2 candidate plans to compare "
                          "(or leave --search out)")
    if fit is None:
        from medxfer.workflows.single_run import fit_for_validation as fit
    tic = time.perf_counter()
    estimate = plan.summary["estimate"]
    epoch_seconds = float(estimate["seconds_per_epoch"])
    together = plan.get("ensemble.time_limit")
    training = float(together) if together else float(plan.get("train.time_limit")) * int(
        plan.get("ensemble.members", 1) or 1)
    planned_epochs = int(plan.get("train.epochs"))
    candidates = candidate_plans(plan, registries, count, fixed=fixed or [])
    rounds = max(1, math.ceil(math.log2(len(candidates))))
    share = SEARCH_SHARE * training
    first = math.floor(share / (epoch_seconds * len(candidates) * rounds))
    if first < 1:
        need = epoch_seconds * len(candidates) * rounds / SEARCH_SHARE / 60
        raise ConfigError(
            f"--search {count}: the budget leaves {share:.0f}s for the search, and one epoch "
            f"of each of {len(candidates)} candidates over {rounds} round(s) takes about "
            f"{epoch_seconds * len(candidates) * rounds:.0f}s here; give a --budget with "
            f"about {math.ceil(need)} more minutes of training, or a smaller --search")
    record: dict[str, Any] = {
        "candidates": [{"label": c.label, "why": c.why, "changes": c.changes, "rounds": []}
                       for c in candidates],
        "share_seconds": round(share), "monitor": plan.get("train.early_stopping.metric")}
    alive = list(range(len(candidates)))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        for round_index in range(rounds):
            epochs = min(planned_epochs, first * 2 ** round_index)
            for i in alive:
                if time.perf_counter() - tic > share * 1.5:  # the machine got slower
                    record["stopped_early"] = "the search took longer than its share"
                    break
                row = _fit_candidate(plan, candidates[i], epochs, epoch_seconds, fit,
                                     registries, workdir / f"round{round_index + 1}_{i}")
                record["candidates"][i]["rounds"].append(row)
                if progress and row["best_score"] is None:
                    write_line(f"search round {round_index + 1}/{rounds}: "
                               f"{candidates[i].label}: diverged, dropped")
                elif progress:
                    write_line(f"search round {round_index + 1}/{rounds}: "
                               f"{candidates[i].label}: {row['monitor']} "
                               f"{_shown(row['best_value'])} after {row['epochs_run']} "
                               f"epoch(s), {format_duration(row['train_seconds'])}")
            ranked = sorted(alive, key=lambda i: (-_score(record, i), i))
            alive = ranked[:1] if "stopped_early" in record else \
                ranked[:max(1, math.ceil(len(alive) / 2))]
            if len(alive) == 1:
                break
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    winner = candidates[alive[0]]
    spent = time.perf_counter() - tic
    record.update(winner=winner.label, seconds=round(spent, 1))
    _apply_winner(plan, winner, record, count)
    _refit(plan, training - spent, epoch_seconds)
    plan.summary["search"] = record
    return record


def search_workdir(output: Path) -> Path:
    """The scratch folder of a search for the run folder ``output``:
    ``.NAME.search-PID`` beside it, removed when the search ends.

    Work folders of earlier searches for ``output`` whose process is gone (killed before
    it could remove its folder) are removed first, and each removal is said.
    """
    output = Path(output)
    for folder in sorted(output.parent.glob(f".{glob.escape(output.name)}.search-*")):
        pid = folder.name.rsplit("-", 1)[-1]
        if folder.is_dir() and not folder.is_symlink() and pid.isdigit() and \
                not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            write_line(f"removed {folder}: the work folder of a search whose process "
                       f"({pid}) ended without removing it")
    return output.parent / f".{output.name}.search-{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. no permission: someone else's process; leave its folder alone
        return True
    return True


def _fit_candidate(plan: Plan, candidate: Candidate, epochs: int, epoch_seconds: float,
                   fit: Fit, registries: Registries, folder: Path) -> dict[str, Any]:
    raw = candidate.apply(plan.config)
    raw.setdefault("train", {}).update(
        epochs=epochs, time_limit=max(1, math.ceil(epochs * epoch_seconds * CANDIDATE_SLACK)),
        max_epochs=None)  # a round trains its epochs, never more
    raw["ensemble"] = {"members": 1}
    raw.setdefault("eval", {})["bootstrap"] = 0
    config = validate_config(raw, source=f"the search's candidate {candidate.label!r}")
    try:
        result = fit(config, folder, registries=registries)
    except TrainingError as exc:  # a candidate that diverges drops out; the search goes on
        return {"epochs": epochs, "best_score": None, "best_value": "diverged",
                "best_epoch": None, "monitor": config.train.early_stopping.metric,
                "epochs_run": None, "train_seconds": None, "error": str(exc)}
    return {"epochs": epochs, **{k: result.get(k) for k in (
        "best_score", "best_value", "best_epoch", "monitor", "epochs_run", "train_seconds")}}


def _score(record: dict[str, Any], index: int) -> float:
    rounds = record["candidates"][index]["rounds"]
    score = rounds[-1]["best_score"] if rounds else None
    return -math.inf if score is None or not math.isfinite(score) else float(score)


def _shown(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else str(value)


def _apply_winner(plan: Plan, winner: Candidate, record: dict[str, Any], count: int) -> None:
    scores = ", ".join(f"{c['label']} {_shown(c['rounds'][-1]['best_value'])} "
                       f"({c['rounds'][-1]['epochs']} epochs)"
                       for c in record["candidates"] if c["rounds"])
    said = f"validation {record['monitor']} of each candidate's last round: {scores}"
    for key, value in winner.changes.items():
        plan.set(key, value, f"chosen by --search {count} ({winner.why}); {said}")
    if not winner.changes:
        plan.summary["search_note"] = f"--search {count} kept the plan as it was; {said}"


def _refit(plan: Plan, seconds: float, epoch_seconds: float) -> None:
    """Fit the planned epochs and members into the ``seconds`` of training left."""
    epochs = int(plan.get("train.epochs"))
    members = int(plan.get("ensemble.members", 1) or 1)
    seconds = max(seconds, epoch_seconds)
    fits = int(seconds // epoch_seconds)
    together = members > 1 and plan.get("ensemble.time_limit")
    if together and fits >= epochs:  # as many members as fit in the time left
        plan.set("ensemble.time_limit", round(seconds),
                 f"after the search, the members train within {round(seconds)}s together, "
                 f"the time the search left (about {fits // epochs} full training(s))")
        members = min(members, fits // epochs)
    elif members > 1 and fits < members * epochs:
        members = max(1, fits // epochs)
        plan.set("ensemble.members", members,
                 f"after the search, time for {members} full training(s) of {epochs} epochs")
        if together:
            plan.set("ensemble.time_limit", None, "after the search, one network")
            together = False
    if members == 1 and fits < epochs:
        epochs = max(1, fits)
        plan.set("train.epochs", epochs, f"after the search, the {epochs} epoch(s) that fit "
                                         "in the time left")
    limit = round(seconds if together else seconds / members)
    plan.set("train.time_limit", limit,
             f"training stops within {limit}s" + ("" if together else " (per network)")
             + ", the time the search left, so the run ends within the budget")
    plan.summary["estimate"] = {**plan.summary["estimate"], "epochs": epochs,
                                "members": members,
                                "training_seconds": round(epochs * epoch_seconds * members)}
