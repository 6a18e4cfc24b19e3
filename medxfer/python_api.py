"""The Python API: what ``medxfer run``, ``predict`` and ``data inspect`` do, for notebooks
and scripts (``import medxfer`` then ``medxfer.run(...)``).

The functions follow the CLI's rules (the same run-folder checks, results never
overwritten, the same warnings, as :class:`~medxfer.errors.MedxferWarning`) and raise
:mod:`medxfer.errors` exceptions where the CLI prints an error; none of them exits.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medxfer.config import RunConfig, apply_overrides, load_config, validate_config
from medxfer.data.inspect import DatasetSummary, summarize_dataset
from medxfer.errors import ConfigError
from medxfer.plugins import build_registries
from medxfer.tasks import task_of
from medxfer.tasks.image_level import csv_target
from medxfer.tasks.segmentation.prediction import SUMMARY_NAME
from medxfer.workflows.predict import LoadedRun, predict_loaded
from medxfer.workflows.predict import load_run as _load_run
from medxfer.workflows.preflight import check_config, random_start_warning
from medxfer.workflows.run_folder import train_in_folder

__all__ = ["RunResult", "inspect", "load_run", "predict", "run"]

Overrides = Mapping[str, Any] | Sequence[str] | None


@dataclass
class RunResult:
    """What :func:`run` trained.

    Attributes:
        summary: The run's results, as in its ``metrics.json`` (test metrics under
            ``"test"``, their confidence intervals under ``"ci95"``, ...).
        run_dir: The run folder (config, model, metrics, report).
    """

    summary: dict[str, Any]
    run_dir: Path


def run(config: RunConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None, *,
        output: str | os.PathLike[str] | None = None, overrides: Overrides = None,
        resume: bool = False) -> RunResult:
    """Train, evaluate and report one run, as ``medxfer run`` does.

    Args:
        config: A YAML file, a mapping of config keys (as the YAML file would hold them),
            a :class:`~medxfer.config.RunConfig`, or None for the embedded sample data.
        output: The run folder (default ``runs/run-<timestamp>``); a folder holding
            results is refused unless ``resume``.
        overrides: Dotted keys and their values, e.g. ``{"train.epochs": 2}``, applied on
            top of ``config`` like ``--set`` (a list of ``"key=value"`` texts works too).
        resume: Continue the run in ``output`` from its last checkpoint.

    Returns:
        The run's summary and folder.

    Raises:
        ConfigError: for a bad config or override, or an ``output`` that cannot take the run.
        DataError, WeightsError: when the data or the starting weights cannot be read.
    """
    texts = _override_texts(overrides)
    run_config = _run_config(config, texts)
    registries = build_registries()
    strategy = check_config(run_config, registries)
    done = train_in_folder(run_config, Path(output) if output is not None else None,
                           registries=registries, resume=resume,
                           random_start=random_start_warning(run_config, registries, strategy))
    return RunResult(done.summary, done.output)


def load_run(run_dir: str | os.PathLike[str]) -> LoadedRun:
    """A finished run's model (eval mode, on the CPU), config and preprocessing.

    ``loaded.preprocess(path)`` gives the model's input for an image file, preprocessed as
    the run's evaluation data; ``loaded.model(x[None])`` its outputs (logits for
    classification and segmentation, values for regression).

    Raises:
        CheckpointError: when ``run_dir`` is not a medxfer run folder.
    """
    return _load_run(run_dir)


def predict(run_dir: str | os.PathLike[str] | LoadedRun,
            inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
            output: str | os.PathLike[str] | None = None) -> list[dict[str, Any]] | list[Path]:
    """Apply a finished run's model to image files, as ``medxfer predict`` does.

    Args:
        run_dir: A run folder, or a run from :func:`load_run`.
        inputs: Image files or DICOM series folders (one path or several).
        output: Classification and regression: also write the rows to this CSV file (or
            ``predictions.csv`` in this folder); optional. Segmentation: the folder for the
            masks and ``masks.csv``; required.

    Returns:
        Classification and regression: one dict per input, keyed by ``medxfer predict``'s
        CSV columns: ``file``, ``prediction`` (the class name, or the predicted value as a
        float for regression) and ``prob_<class>`` (floats) for classification.
        Segmentation: the mask files written, in the order of ``inputs``.

    Raises:
        CheckpointError: when ``run_dir`` is not a finished run.
        ConfigError: for a segmentation run without ``output``, or an ``output`` that exists.
        DataError: when an input cannot be read.
    """
    loaded = run_dir if isinstance(run_dir, LoadedRun) else _load_run(run_dir)
    paths = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    masks = task_of(loaded.config).labels_are_masks
    if masks and output is None:
        raise ConfigError(f"medxfer.predict: {str(loaded.run_dir)!r} is a segmentation run, "
                          "which writes mask files; pass output=FOLDER")
    csv_path = None if output is None or masks else csv_target(str(output))
    written = predict_loaded(loaded, paths, None if output is None else str(output))
    if masks:
        with (Path(output) / SUMMARY_NAME).open(newline="", encoding="utf-8") as handle:
            return [Path(row["mask"]) for row in csv.DictReader(handle)]
    text = written.stdout if csv_path is None else csv_path.read_text(encoding="utf-8")
    values = task_of(loaded.config).labels_are_values  # else prediction is a class name
    return [{key: float(value) if key.startswith("prob_") or (values and key == "prediction")
             else value for key, value in row.items()}
            for row in csv.DictReader(io.StringIO(text))]


def inspect(path: str | os.PathLike[str], *, format: str = "auto",
            max_read: int = 64) -> DatasetSummary:
    """Read a dataset's datalist and a sample of its images, as ``medxfer data inspect``.

    Args:
        path: A dataset file or folder (any layout medxfer reads).
        format: ``auto`` or a layout name.
        max_read: Read at most this many image files for shapes and intensities.

    Raises:
        DataError: when the dataset or one of the sampled files cannot be read.
    """
    return summarize_dataset(path, format=format, max_read=max_read)


def _override_texts(overrides: Overrides) -> list[str]:
    """``--set`` texts from a mapping of dotted keys (values written as JSON, which YAML
    reads back unchanged) or from ``key=value`` texts.

    Raises:
        ConfigError: for overrides that are neither.
    """
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError("medxfer.run: overrides must be a dict of dotted keys, e.g. "
                          "{'train.epochs': 2}, or a list of 'key=value' texts")
    return list(overrides)


def _run_config(config: RunConfig | Mapping[str, Any] | str | os.PathLike[str] | None,
                overrides: list[str]) -> RunConfig:
    """The validated config, overrides applied; relative paths in a mapping are taken
    relative to the current folder (as in a ``--set``)."""
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(config, overrides)
    if isinstance(config, RunConfig):
        raw = config.model_dump(mode="json")
    elif isinstance(config, Mapping):
        raw = dict(config)
    else:
        raise ConfigError(f"medxfer.run: config must be a YAML path, a dict or a RunConfig, "
                          f"not {type(config).__name__}")
    validated = validate_config(apply_overrides(raw, overrides), "the config given to "
                                "medxfer.run", overrides)
    data = validated.data
    if data.path:
        data.path = os.path.abspath(Path(data.path).expanduser())
    if data.target is not None:
        data.target.path = os.path.abspath(Path(data.target.path).expanduser())
    if data.split.file:
        data.split.file = os.path.abspath(Path(data.split.file).expanduser())
    return validated

