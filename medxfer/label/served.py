"""Which run a MONAI Label model serves: a small pointer file with its history.

``APP/finetuned/<model>/served.json`` names the served run (a fine-tuned run folder beside
it, or ``null`` for the run the app was made with, called ``original``) and keeps every
decision: each fine-tuning the guard promoted or refused, each failed fine-tuning and each
restore. It is written atomically (a reader sees the old file or the new one), so the
infer tasks serve exactly the run that was promoted or restored, and a refused candidate,
though kept on disk for a look, is never served nor the start of the next fine-tuning.
Without the file the original run is served.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from medxfer.errors import CheckpointError, ConfigError
from medxfer.io import atomic_write_json
from medxfer.label.appdir import finetuned_dir
from medxfer.locking import locked_folder
from medxfer.training.amp import resolve_device
from medxfer.training.checkpoints import BEST_WEIGHTS
from medxfer.workflows.predict import load_run

SERVED = "served.json"
#: The id of the run an app was made with (``medxfer label init --run``).
ORIGINAL = "original"
#: History events: what happened to a candidate, or a restore.
PROMOTED, REFUSED, FAILED, RESTORED = "promoted", "refused", "failed", "restored"


def pointer_path(app_dir: Path, model: str) -> Path:
    """The pointer file of ``model``."""
    return finetuned_dir(app_dir, model) / SERVED


def read_pointer(app_dir: Path, model: str) -> dict[str, Any]:
    """``{"served": run id or None, "history": [event, ...]}`` (empty without the file).

    Raises:
        CheckpointError: when the file is unreadable.
    """
    path = pointer_path(app_dir, model)
    if not path.is_file():
        return {"served": None, "history": []}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        served, history = data["served"], list(data["history"])
        if served is not None and not isinstance(served, str):
            raise ValueError("'served' is not a run name")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is unreadable ({exc}); choose the served run again with `medxfer "
            f"label restore --app APP --model {model} --run RUN` (or delete the file to serve "
            "the original run)") from None
    return {"served": served, "history": history}


def run_id(app_dir: Path, model: str, run_dir: Path) -> str:
    """A served run's id as clients see it: ``original`` or the fine-tuned run's folder name."""
    return run_dir.name if Path(run_dir).parent == finetuned_dir(app_dir, model) else ORIGINAL


def run_folder(app_dir: Path, model: str, original: Path, run: str | None) -> Path:
    """The folder of run id ``run`` (``None`` or ``original``: the original run).

    Raises:
        ConfigError: for a name that is not a finished fine-tuned run of ``model``.
    """
    if run in (None, ORIGINAL):
        return Path(original)
    folder = finetuned_dir(app_dir, model)
    path = folder / str(run)
    if path.parent != folder or not (path / BEST_WEIGHTS).is_file():
        raise ConfigError(f"{run!r} is not a finished fine-tuned run of model {model!r} (in "
                          f"{str(folder)!r}); `medxfer label history --app APP --model "
                          f"{model}` lists them")
    return path


def served_run(app_dir: Path, model: str, original: Path) -> Path:
    """The run folder ``model`` serves now.

    Raises:
        CheckpointError: when the pointer is unreadable or names a run that is gone.
    """
    served = read_pointer(app_dir, model)["served"]
    try:
        return run_folder(app_dir, model, original, served)
    except ConfigError:
        raise CheckpointError(
            f"{str(pointer_path(app_dir, model))!r} serves {served!r}, which is no longer a "
            f"finished run; serve another with `medxfer label restore --app APP --model "
            f"{model} --run RUN`") from None


@contextmanager
def pointer_lock(app_dir: Path, model: str) -> Iterator[None]:
    """Hold the model's lock while changing what it serves (a fine-tuning holds it from
    start to decision, so a restore meanwhile is refused, not lost).

    Raises:
        ConfigError: when another process holds it.
    """
    with locked_folder(finetuned_dir(app_dir, model), option=f"model {model!r}"):
        yield


def record(app_dir: Path, model: str, event: dict[str, Any], *,
           serve: str | None | bool = False) -> dict[str, Any]:
    """Append ``event`` (with a time stamp) to the history; with ``serve`` a run id (or
    ``None`` for the original), serve that run from now on. Call under :func:`pointer_lock`.

    Returns:
        The new pointer.
    """
    pointer = read_pointer(app_dir, model)
    if serve is not False:
        pointer["served"] = None if serve in (None, ORIGINAL) else serve
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **event,
             "served": pointer["served"] or ORIGINAL}
    pointer["history"].append(entry)
    atomic_write_json(pointer_path(app_dir, model), pointer)
    return pointer


def last_event(app_dir: Path, model: str, *kinds: str) -> dict[str, Any] | None:
    """The newest history event of one of ``kinds`` (any kind when none are given)."""
    for event in reversed(read_pointer(app_dir, model)["history"]):
        if not kinds or event.get("event") in kinds:
            return event
    return None


def restore(app_dir: Path, model: str, original: Path, run: str | None = None) -> str:
    """Serve an earlier run again: ``run`` (``original`` or a promoted fine-tuned run), or
    by default the run served before the current one.

    Returns:
        The id of the run served from now on.

    Raises:
        ConfigError: for a run that was never promoted (a refused or failed candidate),
            one that is gone, nothing to go back to, or a fine-tuning in progress.
    """
    with pointer_lock(app_dir, model):
        pointer = read_pointer(app_dir, model)
        current = pointer["served"] or ORIGINAL
        promoted = {e.get("candidate") for e in pointer["history"] if e.get("event") == PROMOTED}
        if run is None:
            run = _previous(pointer["history"], current)
            if run is None:
                raise ConfigError(f"model {model!r} serves {current!r} and has served nothing "
                                  "before it; there is nothing to restore")
        if run != ORIGINAL and run not in promoted:
            raise ConfigError(f"{run!r} was never promoted for model {model!r} (refused or "
                              "failed candidates are never served); restore 'original' or one "
                              f"of: {', '.join(sorted(p for p in promoted if p)) or 'none'}")
        run_folder(app_dir, model, original, run)
        record(app_dir, model, {"event": RESTORED, "run": run, "previous": current},
               serve=run)
    return run


def _previous(history: list[dict[str, Any]], current: str) -> str | None:
    """The run served before ``current`` became the served run (``None``: nothing)."""
    for event in reversed(history):
        if event.get("event") in (PROMOTED, RESTORED) and event.get("served") == current:
            previous = event.get("previous")
            return None if previous in (None, current) else previous
    return None


class ServedModel:
    """The loaded run a model serves, reloaded when the pointer names another run (the
    infer task and the uncertainty scoring of one model share it).

    Args:
        app_dir: The app folder.
        model: The model's name.
        original: The run the app was made with.
    """

    def __init__(self, app_dir: Path, model: str, original: Path) -> None:
        self.app_dir, self.model, self.original = Path(app_dir), model, Path(original)
        self._loaded: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The served run as :func:`medxfer.workflows.predict.load_run` gives it."""
        with self._lock:
            path = served_run(self.app_dir, self.model, self.original)
            if self._loaded is None or self._loaded.run_dir != path:
                self._loaded = load_run(path, device=resolve_device("auto"))
            return self._loaded

    def run_id(self, loaded: Any) -> str:
        """The id clients see for ``loaded`` (``original`` or a fine-tuned run's name)."""
        return run_id(self.app_dir, self.model, loaded.run_dir)
