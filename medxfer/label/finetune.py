"""Fine-tune a finished segmentation run on newly labelled images (MONAI Label's train).

The new run is an ordinary medxfer run: the source run's config with the labelled images
as its data (a manifest written into the new run folder, split into train, validation
and test cases), the source run's weights as its pretrained weights and the source run's
transfer strategy. It needs no ``monailabel`` and is tested on its own.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any

from medxfer.config import load_config
from medxfer.errors import ConfigError, DataError
from medxfer.io import atomic_write_text
from medxfer.tasks import task_of
from medxfer.training.checkpoints import read_sidecar
from medxfer.workflows.run import run_pipeline

MANIFEST = "datastore.csv"
MIN_CASES = 3


def split_cases(cases: list[dict[str, str]], *, val_split: float, test_split: float,
                seed: int = 0) -> list[dict[str, str]]:
    """Assign ``train``/``val``/``test`` to labelled cases (at least one case in each).

    Raises:
        DataError: with fewer than three labelled cases.
    """
    if len(cases) < MIN_CASES:
        raise DataError(f"fine-tuning needs at least {MIN_CASES} labelled images (one each for "
                        f"training, validation and test); the datastore has {len(cases)}: "
                        "label more images and save them as final labels")
    order = sorted(cases, key=lambda c: c["id"])
    random.Random(seed).shuffle(order)
    n = len(order)
    n_test = min(max(1, round(test_split * n)), n - 2)
    n_val = min(max(1, round(val_split * n)), n - n_test - 1)
    out = []
    for i, case in enumerate(order):
        split = "val" if i < n_val else "test" if i < n_val + n_test else "train"
        out.append({**case, "split": split})
    return out


def write_manifest(path: Path, cases: list[dict[str, str]]) -> None:
    """Write ``id,image,label,split`` rows (absolute paths)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "image", "label", "split"])
    for case in cases:
        writer.writerow([case["id"], str(Path(case["image"]).resolve()),
                         str(Path(case["label"]).resolve()), case["split"]])
    atomic_write_text(path, buffer.getvalue())


def _yaml(value: Any) -> str:
    return json.dumps(value)  # JSON is YAML: overrides read their values as YAML data


def finetune_config(source: Path, manifest: Path, *, epochs: int | None) -> Any:
    """The source run's config, retargeted at ``manifest`` and the source run's weights.

    Raises:
        ConfigError: when the source is not a segmentation run.
    """
    config = load_config(source / "config.yaml")
    if not task_of(config).labels_are_masks:
        raise ConfigError(f"{str(source)!r} is a {config.task} run; MONAI Label's train task "
                          "fine-tunes segmentation runs")
    sidecar = read_sidecar(source)
    strategy = config.strategy.name
    overrides = [f"data.path={_yaml(str(manifest))}", "data.format=manifest",
                 "data.image_key=image", "data.label_key=label", "data.split.file=null",
                 "data.limit=null", "data.target=null", "domain_adaptation=null",
                 f"model.backbone.pretrained={_yaml(str(source))}"]
    if sidecar.get("class_names"):
        overrides.append(f"data.classes={_yaml(list(sidecar['class_names']))}")
    if strategy == "scratch":  # fine-tuning from scratch would throw the run away
        overrides.append("strategy={name: full_finetune}")
    if epochs is not None:
        overrides.append(f"train.epochs={int(epochs)}")
    return load_config(source / "config.yaml", overrides)


def finetune_run(source: str | Path, cases: list[dict[str, str]], run_dir: str | Path, *,
                 epochs: int | None = None, val_split: float = 0.2, test_split: float = 0.1,
                 seed: int = 0, registries: Any | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Fine-tune the run ``source`` on ``cases`` into the new folder ``run_dir``.

    Args:
        source: A finished segmentation run (the weights and strategy to start from).
        cases: Labelled images: ``{"id", "image", "label"}`` with file paths.
        run_dir: The new run folder (must not exist).
        epochs: Training epochs (default: the source run's).
        val_split: Share of cases that select the checkpoint.
        test_split: Share of cases held out for the run's report.
        seed: Seed of the split.
        registries: Plugin registries (built from installed plugins when omitted).
        progress: Show per-epoch progress.

    Returns:
        The run's summary (``metrics.json``) with ``run_dir`` and the split sizes added.

    Raises:
        ConfigError: when ``run_dir`` exists or the source is not a segmentation run.
        DataError: with fewer than three labelled cases or unreadable files.
    """
    source, run_dir = Path(source).resolve(), Path(run_dir)
    if run_dir.exists():
        raise ConfigError(f"{str(run_dir)!r} exists; a fine-tuned run never overwrites another")
    split = split_cases(cases, val_split=val_split, test_split=test_split, seed=seed)
    run_dir.mkdir(parents=True)
    manifest = run_dir / MANIFEST
    write_manifest(manifest, split)
    config = finetune_config(source, manifest, epochs=epochs)
    summary = run_pipeline(config, run_dir, registries=registries, progress=progress)
    counts = {s: sum(c["split"] == s for c in split) for s in ("train", "val", "test")}
    return {**summary, "run_dir": str(run_dir), "source_run": str(source), "cases": counts}
