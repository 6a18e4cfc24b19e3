"""The MONAI Label app folder that ``medxfer label init`` writes, and reading it back.

An app folder holds ``main.py`` (three lines: it imports :class:`MedxferLabelApp`, which
MONAI Label finds as the app class), ``medxfer_app.json`` (the runs it serves, by model
name) and, once MONAI Label's train button has been used, ``finetuned/<model>/`` with one
medxfer run folder per fine-tuning and ``served.json``, which says which run is served
(see :mod:`medxfer.label.served`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from medxfer.errors import ConfigError
from medxfer.io import atomic_write_text

APP_CONFIG = "medxfer_app.json"
FINETUNED = "finetuned"
MAIN_PY = '''"""MONAI Label app serving medxfer runs (written by `medxfer label init`)."""

from medxfer.label.app import MedxferLabelApp  # noqa: F401  (MONAI Label's app class)
'''


def model_name(run_dir: Path) -> str:
    """A MONAI Label model name from a run folder's name (letters, digits, ``_``, ``-``)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(run_dir).resolve().name).strip("_")
    return name or "medxfer"


def _check_run(run_dir: Path) -> Path:
    from medxfer.training.checkpoints import BEST_WEIGHTS

    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / "config.yaml").is_file() or not (run_dir / BEST_WEIGHTS).is_file():
        raise ConfigError(f"--run {str(run_dir)!r} is not a finished medxfer run (needs "
                          f"config.yaml and {BEST_WEIGHTS}); pass the --output folder of "
                          "`medxfer run`")
    return run_dir


def write_app(app_dir: Path, runs: list[Path]) -> dict[str, Path]:
    """Write a MONAI Label app folder serving ``runs``.

    Args:
        app_dir: A folder that does not exist yet or is empty.
        runs: Finished run folders; each becomes a model named after its folder.

    Returns:
        Model name -> run folder.

    Raises:
        ConfigError: for a used ``app_dir``, a folder that is not a finished run, or two
            runs whose folder names give the same model name.
    """
    app_dir = Path(app_dir)
    if app_dir.exists() and (not app_dir.is_dir() or any(app_dir.iterdir())):
        raise ConfigError(f"--app {str(app_dir)!r} exists and is not an empty folder; choose "
                          "a new folder (an existing app is served as it is with "
                          "`medxfer label serve --app`)")
    if not runs:
        raise ConfigError("pass at least one --run folder")
    models: dict[str, Path] = {}
    for run in runs:
        run_dir = _check_run(run)
        name = model_name(run_dir)
        if name in models:
            raise ConfigError(f"runs {str(models[name])!r} and {str(run_dir)!r} would both be "
                              f"model {name!r}; rename one of the folders")
        models[name] = run_dir
    config = {"models": {name: str(path) for name, path in models.items()}}
    atomic_write_text(app_dir / APP_CONFIG, json.dumps(config, indent=2) + "\n")
    atomic_write_text(app_dir / "main.py", MAIN_PY)
    return models


def read_app(app_dir: Path) -> dict[str, Path]:
    """Model name -> run folder, from ``app_dir/medxfer_app.json``.

    Raises:
        ConfigError: when the file is missing or malformed.
    """
    path = Path(app_dir) / APP_CONFIG
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} does not exist; make the app with "
                          "`medxfer label init --run RUN --app APP`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        models = {str(k): Path(v) for k, v in data["models"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{str(path)!r} is not a medxfer app config ({exc}); write the app "
                          "again with `medxfer label init`") from None
    return models


def finetuned_dir(app_dir: Path, model: str) -> Path:
    """Where the fine-tuned runs of ``model`` go."""
    return Path(app_dir) / FINETUNED / model
