"""Fine-tune a finished segmentation run on newly labelled images (MONAI Label's train).

The new run is an ordinary medxfer run: the source run's config with the labelled images
as its data (a manifest written into the new run folder, split into train, validation
and test cases), the source run's weights as its pretrained weights and the source run's
transfer strategy, on a schedule of its own: a learning rate below the one the model was
trained with (a tenth by default) and a linear warm-up on a cosine schedule, so the first
steps on a handful of new labels do not throw away what the model knew. Every label is
checked against its image first, and a fine-tuning that fails leaves no folder behind. It
needs no ``monailabel`` and is tested on its own.
"""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
from pathlib import Path
from typing import Any

from medxfer.config import load_config
from medxfer.errors import ConfigError, DataError
from medxfer.io import atomic_write_text
from medxfer.label.labels import check_label
from medxfer.tasks import task_of
from medxfer.training.checkpoints import read_sidecar
from medxfer.workflows.run import run_pipeline

MANIFEST = "datastore.csv"
MIN_CASES = 3
#: Fine-tuning's learning rate as a share of the rate the model was first trained with.
LR_FACTOR = 0.1
#: Linear warm-up of the fine-tuning's learning rate, in epochs (at most half the epochs).
WARMUP_EPOCHS = 1.0


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


def source_lr(run_dir: Path) -> float:
    """The base learning rate ``run_dir`` was trained with (``train.optimizer.lr``)."""
    return float(load_config(Path(run_dir) / "config.yaml").train.optimizer.lr)


def finetune_config(source: Path, manifest: Path, *, epochs: int | None,
                    lr: float | None = None, warmup_epochs: float = WARMUP_EPOCHS) -> Any:
    """The source run's config, retargeted at ``manifest`` and the source run's weights,
    with the fine-tuning schedule: base rate ``lr`` (default: a tenth of the source run's),
    a cosine schedule and ``warmup_epochs`` of linear warm-up (at most half the epochs).

    Raises:
        ConfigError: when the source is not a segmentation run or ``lr`` is not positive.
    """
    config = load_config(source / "config.yaml")
    if not task_of(config).labels_are_masks:
        raise ConfigError(f"{str(source)!r} is a {config.task} run; MONAI Label's train task "
                          "fine-tunes segmentation runs")
    sidecar = read_sidecar(source)
    strategy = config.strategy.name
    epochs = int(epochs) if epochs is not None else config.train.epochs
    lr = config.train.optimizer.lr * LR_FACTOR if lr is None else float(lr)
    if not lr > 0:
        raise ConfigError(f"the fine-tuning learning rate must be positive, got {lr}; pass "
                          "a positive lr_factor (or lr) in the train request")
    warmup = min(max(float(warmup_epochs), 0.0), epochs / 2)
    overrides = [f"data.path={_yaml(str(manifest))}", "data.format=manifest",
                 "data.image_key=image", "data.label_key=label", "data.split.file=null",
                 "data.limit=null", "data.target=null", "domain_adaptation=null",
                 f"model.backbone.pretrained={_yaml(str(source))}",
                 f"train.epochs={epochs}", f"train.optimizer.lr={_yaml(lr)}",
                 "train.scheduler.name=cosine", f"train.scheduler.warmup_epochs={_yaml(warmup)}"]
    if sidecar.get("class_names"):
        overrides.append(f"data.classes={_yaml(list(sidecar['class_names']))}")
    if strategy == "scratch":  # fine-tuning from scratch would throw the run away
        overrides.append("strategy={name: full_finetune}")
    return load_config(source / "config.yaml", overrides)


def check_labels(source: Path, cases: list[dict[str, str]]) -> None:
    """Check every case's label against its image (see :func:`medxfer.label.labels.check_label`).

    Raises:
        DataError: naming the first image whose label does not fit.
    """
    num_classes = int(read_sidecar(source)["num_classes"])
    for case in cases:
        try:
            check_label(case["image"], case["label"], num_classes, image_id=case["id"])
        except DataError as exc:
            raise DataError(f"{exc}; fix or delete that label, then train again") from None


def finetune_run(source: str | Path, cases: list[dict[str, str]], run_dir: str | Path, *,
                 epochs: int | None = None, lr: float | None = None,
                 warmup_epochs: float = WARMUP_EPOCHS, val_split: float = 0.2,
                 test_split: float = 0.2, seed: int = 0, registries: Any | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Fine-tune the run ``source`` on ``cases`` into the new folder ``run_dir``.

    Args:
        source: A finished segmentation run (the weights and strategy to start from).
        cases: Labelled images: ``{"id", "image", "label"}`` with file paths.
        run_dir: The new run folder (must not exist; removed again when anything fails).
        epochs: Training epochs (default: the source run's).
        lr: Base learning rate (default: a tenth of the source run's).
        warmup_epochs: Linear warm-up in epochs (at most half the epochs).
        val_split: Share of cases that select the checkpoint.
        test_split: Share of cases held out: the run's report and the guard's comparison.
        seed: Seed of the split.
        registries: Plugin registries (built from installed plugins when omitted).
        progress: Show per-epoch progress.

    Returns:
        The run's summary (``metrics.json``) with ``run_dir``, the split sizes (``cases``)
        and the ids of each split (``split_ids``) added.

    Raises:
        ConfigError: when ``run_dir`` exists or the source is not a segmentation run.
        DataError: with fewer than three labelled cases, a label that does not fit its
            image, or unreadable files.
    """
    source, run_dir = Path(source).resolve(), Path(run_dir)
    if run_dir.exists():
        raise ConfigError(f"{str(run_dir)!r} exists; a fine-tuned run never overwrites another")
    split = split_cases(cases, val_split=val_split, test_split=test_split, seed=seed)
    check_labels(source, split)
    run_dir.mkdir(parents=True)
    try:
        manifest = run_dir / MANIFEST
        write_manifest(manifest, split)
        config = finetune_config(source, manifest, epochs=epochs, lr=lr,
                                 warmup_epochs=warmup_epochs)
        summary = run_pipeline(config, run_dir, registries=registries, progress=progress)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    counts = {s: sum(c["split"] == s for c in split) for s in ("train", "val", "test")}
    ids = {s: [c["id"] for c in split if c["split"] == s] for s in ("train", "val", "test")}
    return {**summary, "run_dir": str(run_dir), "source_run": str(source), "cases": counts,
            "split_ids": ids, "lr": float(config.train.optimizer.lr),
            "warmup_epochs": float(config.train.scheduler.warmup_epochs)}
