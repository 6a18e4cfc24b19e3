"""``medxfer ensemble``: combine finished runs and evaluate the ensemble beside each member.

Members may differ in backbone, strategy, seed and preprocessing, but must share the task,
the class names (in order) and the validation and test cases: that is checked against each
run's ``splits.csv`` before any work, and again after each member's data is rebuilt with
its own config. The chosen combiner plugin is fitted on the members' validation outputs
only (with their validation scores) and then combines their test outputs; test labels are
used for scoring and nothing else.

Classification reports each member's and the ensemble's usual metrics (the binary decision
threshold chosen on validation, as in a run's own evaluation) and the expected
calibration error with a reliability diagram. Segmentation combines probability maps case
by case and reports Dice, IoU and HD95 (:mod:`medxfer.tasks.segmentation.ensemble`).

Everything is written to a hidden folder beside ``output_dir`` and renamed into place at
the end, so a failed ensemble leaves nothing behind, and an ``output_dir`` that already
holds files is refused.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset, Subset

from medxfer.config import RunConfig
from medxfer.data import load_data
from medxfer.errors import CheckpointError, ConfigError
from medxfer.io import atomic_write_text, new_temporary
from medxfer.plugin_kit import attributes as plugin_attributes
from medxfer.plugins import Registries, build_registries, check_factory_kwargs
from medxfer.report import write_metrics_json
from medxfer.report.ensemble import render_ensemble_markdown
from medxfer.tasks import TASKS, get_task, task_of
from medxfer.tasks.decisions import ECE_BINS
from medxfer.training.amp import Precision, resolve_device, resolve_precision
from medxfer.workflows.predict import LoadedRun, load_run
from medxfer.workflows.run_setup import wants_imagenet_norm

ENSEMBLE_JSON = "ensemble.json"
ENSEMBLE_MD = "ensemble.md"
SPLITS = ("val", "test")


@dataclass
class Member:
    """One run of the ensemble: its model, recorded splits and rebuilt data."""

    label: str
    loaded: LoadedRun
    splits: dict[str, list[str]]
    datasets: dict[str, Dataset] = field(default_factory=dict)
    precision: Precision | None = None

    @property
    def config(self) -> RunConfig:
        """The run's config."""
        return self.loaded.config

    @property
    def run(self) -> str:
        """The run folder as given."""
        return str(self.loaded.run_dir)

    def describe(self) -> dict[str, Any]:
        """What the member is, for the summary: folder, backbone, strategy, seed."""
        return {"label": self.label, "run": self.run,
                "backbone": self.config.model.backbone.name,
                "strategy": self.config.strategy.name, "seed": self.config.train.seed}


def run_ensemble(run_dirs: Sequence[str | os.PathLike[str]], combiner_name: str,
                 output_dir: str | os.PathLike[str], *,
                 combiner_options: dict[str, Any] | None = None,
                 registries: Registries | None = None, device: str = "auto") -> dict[str, Any]:
    """Combine finished runs with a combiner plugin and evaluate it on their test set.

    Args:
        run_dirs: Folders of finished ``medxfer run`` runs (at least two).
        combiner_name: A registered combiner (``mean``, ``vote``, ``weighted``, ``stacking``).
        output_dir: A new or empty folder for ``ensemble.json``, ``ensemble.md``,
            ``predictions.csv`` (segmentation: ``per_case.csv``) and ``figures/``.
        combiner_options: Keyword options for the combiner's factory.
        registries: Plugin registries (built from installed plugins when omitted).
        device: ``auto``, ``cpu`` or a CUDA device for inference.

    Returns:
        The summary written to ``ensemble.json``.

    Raises:
        ConfigError: for fewer than two runs, a used output folder, an unknown combiner or
            option, or members that differ in task, classes or cases (naming the runs and
            what differs).
        CheckpointError: when a folder is not a finished run.
    """
    output = Path(output_dir)
    check_output_dir(output)
    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise ConfigError(f"--runs: an ensemble needs at least two finished runs, got {len(dirs)}")
    resolved = [d.resolve() for d in dirs]
    for i, d in enumerate(resolved):
        if d in resolved[:i]:
            raise ConfigError(f"--runs: {str(dirs[i])!r} is given twice; each member once")
    for d in dirs:
        if d.is_dir() and not (d / "metrics.json").is_file():
            raise CheckpointError(
                f"--runs: {str(d)!r} is not a finished run (no metrics.json: it stopped before "
                "its test evaluation, was killed or diverged); finish it with `medxfer run "
                f"--output {d} --resume`, or leave it out")
    weights = (combiner_options or {}).get("weights")
    if isinstance(weights, (list, tuple)) and len(weights) != len(dirs):
        raise ConfigError(f"--option weights: {len(weights)} weight(s) given for {len(dirs)} "
                          "runs; give one per run, in the order of --runs")
    registries = registries or build_registries()
    combiner = make_combiner(registries, combiner_name, combiner_options or {})
    dev = resolve_device(device)
    members = [Member(label, load_run(d, registries=registries, device=dev), read_splits(d))
               for label, d in zip(member_labels(dirs), dirs)]
    check_members_agree(members)
    task = task_of(members[0].config)
    check_combinable(task, combiner, combiner_name, members[0].run)
    load_member_data(members, dev)

    staging = _staging_dir(output)
    try:
        info = {"name": combiner_name, "options": dict(combiner_options or {})}
        summary = task.evaluate_run_ensemble(members, combiner, info, staging, dev)
        summary["combiner"] = {**info, **(plugin_attributes.describe_plugin(combiner) or {})}
        summary["figures"] = sorted(str(p.relative_to(staging))
                                    for p in (staging / "figures").glob("*.png"))
        write_metrics_json(staging / ENSEMBLE_JSON, summary)
        atomic_write_text(staging / ENSEMBLE_MD, render_ensemble_markdown(summary, ECE_BINS))
        _publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


# ---------------------------------------------------------------------------------------
# members
# ---------------------------------------------------------------------------------------


def check_output_dir(output: Path) -> None:
    """Refuse an output that is a file or a folder that already holds files.

    Raises:
        ConfigError: naming the folder.
    """
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {str(output)!r} is a file, not a folder")
    if output.is_dir() and any(output.iterdir()):
        raise ConfigError(f"--output {str(output)!r} already holds files; results are never "
                          "overwritten. Choose another folder.")


def check_combinable(task: Any, combiner: Any, combiner_name: str, run: str) -> None:
    """Refuse runs whose task ``medxfer ensemble`` cannot combine, and a combiner that
    cannot combine outputs with spatial dimensions for a task that has them.

    Raises:
        ConfigError: naming the run or the combiner and what to choose instead.
    """
    if not task.supports_run_ensembles:
        able = [name for name in TASKS if get_task(name).supports_run_ensembles]
        raise ConfigError(f"run {run!r} is a {task.name} run; ensembles combine "
                          f"{' or '.join(able)} runs")
    check_spatial_combiner(task, combiner, f"--combiner {combiner_name!r}",
                           "for segmentation runs choose mean, vote or weighted")


def check_spatial_combiner(task: Any, combiner: Any, option: str, choices: str) -> None:
    """Refuse a combiner that combines per-image outputs only for a task whose outputs are
    maps (segmentation).

    Raises:
        ConfigError: naming ``option`` and saying ``choices``.
    """
    if task.labels_are_masks and not plugin_attributes.supports_spatial(combiner):
        raise ConfigError(f"{option} combines classification outputs only; {choices}")


def make_combiner(registries: Registries, name: str, options: dict[str, Any]) -> Any:
    """The combiner ``name`` built with ``options`` (checked against its factory).

    Raises:
        ConfigError: for an unknown name (with suggestions) or option.
    """
    entry = registries.combiner.get(name, key="--combiner")
    try:
        check_factory_kwargs(entry, options)
    except ConfigError as exc:
        raise ConfigError(f"--option {exc}") from None
    return entry.factory(**options)


def member_labels(dirs: Sequence[Path]) -> list[str]:
    """Short names for tables: the folder names, or the paths when two names clash."""
    names = [d.name or str(d) for d in dirs]
    return names if len(set(names)) == len(names) else [str(d) for d in dirs]


def read_splits(run_dir: Path) -> dict[str, list[str]]:
    """Case ids per split from ``run_dir/splits.csv`` (``id,split``), in file order.

    Raises:
        ConfigError: when the file is missing or malformed.
    """
    path = Path(run_dir) / "splits.csv"
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} is missing: each run's splits.csv (written by "
                          "`medxfer run`) shows that the members share their cases")
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"id", "split"} <= set(reader.fieldnames or []):
            raise ConfigError(f"{str(path)!r} needs the columns id and split")
        for row in reader:
            splits.setdefault(row["split"], []).append(row["id"])
    return splits


def check_members_agree(members: Sequence[Member]) -> None:
    """All members share task, classes, and validation and test cases (per splits.csv).

    Raises:
        ConfigError: naming the first member and the one that differs, and what differs.
    """
    ref = members[0]
    for other in members[1:]:
        pair = f"runs {ref.run!r} and {other.run!r}"
        if other.config.task != ref.config.task:
            raise ConfigError(f"{pair} differ in task ({ref.config.task} vs "
                              f"{other.config.task}); ensemble members must share the task")
        counts = [m.loaded.sidecar.get("num_classes") for m in (ref, other)]
        if other.loaded.class_names != ref.loaded.class_names or counts[0] != counts[1]:
            raise ConfigError(f"{pair} differ in classes ({ref.loaded.class_names} vs "
                              f"{other.loaded.class_names}); ensemble members must share the "
                              "classes, in the same order")
        for split in SPLITS:
            _check_same_cases(pair, split, ref.splits.get(split, []),
                              other.splits.get(split, []), ref.run, other.run)


def _check_same_cases(pair: str, split: str, a: list[str], b: list[str], name_a: str,
                      name_b: str) -> None:
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if not only_a and not only_b:
        return
    parts = [f"{len(only_a)} only in {name_a!r} (e.g. {only_a[0]!r})" if only_a else "",
             f"{len(only_b)} only in {name_b!r} (e.g. {only_b[0]!r})" if only_b else ""]
    what = "test set" if split == "test" else "validation set"
    raise ConfigError(f"{pair} have different {what}s ({len(a)} vs {len(b)} cases; "
                      f"{'; '.join(p for p in parts if p)}); ensemble members must be "
                      "evaluated on the same cases: use the same data, data.split and "
                      "data.limit")


def load_member_data(members: Sequence[Member], device: torch.device) -> None:
    """Rebuild each member's validation and test data with its own preprocessing, check
    it against its splits.csv, and put every member's cases in the first member's order.

    Raises:
        ConfigError: when a member's data no longer gives its recorded split.
        DataError: when a member's data cannot be read.
    """
    order: dict[str, list[str]] = {}
    for member in members:
        config = member.config
        # No cache: a memory cache would also preprocess the training split, never read here.
        data = config.data.model_copy(update={"cache": "none"})
        config = config.model_copy(update={"data": data})
        if "imagenet_norm" in member.loaded.sidecar:
            norm = bool(member.loaded.sidecar["imagenet_norm"])
        else:
            pretrained = "none" if config.strategy.name == "scratch" else \
                config.model.backbone.kwargs.get("pretrained", "none")
            norm = wants_imagenet_norm(config, pretrained)
        bundle = load_data(config, imagenet_norm=norm)
        for split in SPLITS:
            ids = [str(c["id"]) for c in bundle.cases if c["split"] == split]
            if set(ids) != set(member.splits.get(split, [])):
                raise ConfigError(
                    f"the data of run {member.run!r} no longer gives the {split} cases recorded "
                    f"in its splits.csv ({len(ids)} vs {len(member.splits.get(split, []))} "
                    "cases); was data.path changed, moved or edited since the run?")
            reference = order.setdefault(split, ids)
            position = {case_id: i for i, case_id in enumerate(ids)}
            member.datasets[split] = Subset(getattr(bundle, split),
                                            [position[case_id] for case_id in reference])
        member.precision = resolve_precision(config.train.amp, device)


# ---------------------------------------------------------------------------------------
# combining
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------

def _staging_dir(output: Path) -> Path:
    """A new hidden folder beside ``output`` (created with the usual permissions)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = new_temporary(output, suffix=".partial", directory=True)
    (staging / "figures").mkdir()
    return staging


def _publish(staging: Path, output: Path) -> None:
    """Rename ``staging`` to ``output`` (which must still be absent or empty)."""
    check_output_dir(output)
    if output.is_dir():
        output.rmdir()
    os.replace(staging, output)
