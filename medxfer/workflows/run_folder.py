"""The run folder's lifecycle: where a run writes, when a folder may be (re)used, what a
failed run leaves behind, and the locked, distributed-aware frame a run trains in.

``medxfer run`` and ``medxfer pretrain`` (and the Python API) go through these; the CLI only
parses arguments and prints.
"""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from medxfer.errors import ConfigError, notify
from medxfer.io import atomic_write_text
from medxfer.locking import entries, locked_folder
from medxfer.training import distributed as D
from medxfer.training.checkpoints import has_checkpoint
from medxfer.workflows.run import run_pipeline


def default_output_dir() -> Path:
    """``runs/run-YYYYmmdd-HHMMSS`` under the current folder."""
    return Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")


#: What a run writes before its first checkpoint (``checkpoints/last.pt``): a folder
#: holding only these, and no ``metrics.json``, is a run that stopped before it had anything
#: to resume.
BEFORE_FIRST_CHECKPOINT = frozenset({"config.yaml", "splits.csv", "cache", "tensorboard",
                                     "model.safetensors", "model.json", "checkpoints",
                                     "members", "plan.yaml", "plan.json"})


def never_checkpointed(output: Path) -> bool:
    """Whether ``output`` holds a medxfer run killed before its first checkpoint (SIGKILL or
    SIGTERM leave its ``config.yaml`` and ``splits.csv``): nothing of it can be resumed."""
    names = {p.name for p in entries(output)}
    return ((output / "config.yaml").is_file() and names <= BEFORE_FIRST_CHECKPOINT
            and not has_checkpoint(output))


def check_output_dir(output: Path, resume: bool) -> bool:
    """Refuse to write into a folder that already holds results, unless resuming; return
    whether the run resumes.

    A folder holding only a run killed before its first checkpoint is emptied (with a
    warning) and the run starts again there, with or without ``--resume``: there is
    nothing to resume, and the same command should simply work again. Call it holding the
    folder's lock (:func:`medxfer.locking.locked_folder`), so that a run still writing there
    is never taken for a killed one.

    Raises:
        ConfigError: when ``output`` is a file, or holds a run and ``resume`` is false.
    """
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {str(output)!r} is a file, not a folder")
    if resume and not output.is_dir():
        raise ConfigError(f"--resume: run folder {str(output)!r} does not exist")
    if not output.is_dir() or not entries(output):
        return False
    if never_checkpointed(output):
        notify(f"{str(output)!r} holds a run that stopped before its first checkpoint (nothing "
             "to resume); starting it again there")
        for child in entries(output):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        return False
    if resume:
        return True
    raise ConfigError(
        f"--output {str(output)!r} already holds files; results are never overwritten. "
        "Pass --resume to continue that run, or choose another folder.")


def finished(output: Path) -> bool:
    """Whether ``output`` holds a finished run (its ``metrics.json``)."""
    return (output / "metrics.json").is_file()


@contextmanager
def cleared_if_nothing_to_resume(output: Path, resume: bool, *,
                                 existed: bool | None = None) -> Iterator[None]:
    """Remove what a failed new run wrote into ``output`` when it left no checkpoint.

    A run that stops before its first checkpoint (a missing data file, weights that are
    not on this machine, an interrupted first epoch) has nothing ``--resume`` could
    continue; left in place, its ``config.yaml`` and ``splits.csv`` would make the same
    command refuse the folder. So the folder goes (or is emptied, if it existed empty
    before), and the command can simply be run again. Resumed runs and runs with a
    checkpoint anywhere below ``output`` (ensemble members included) are left as they
    are. Only the writing process (rank 0) removes anything. ``existed`` says whether the
    folder was there before the run (default: whether it is there now).
    """
    existed = output.is_dir() if existed is None else existed
    fresh = not resume and not (output.is_dir() and entries(output))
    try:
        yield
    except BaseException:
        if fresh and D.is_main() and output.is_dir() and not has_checkpoint(output):
            if existed:
                for child in output.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            else:
                shutil.rmtree(output, ignore_errors=True)
        raise


def run_arguments(config: Path | None, output: Path, overrides: list[str],
                  resume: bool) -> list[str]:
    """The ``medxfer run`` arguments a ``--nproc`` launcher passes to every worker."""
    args = [str(config)] if config is not None else []
    args += ["--output", str(output)]
    for override in overrides:
        args += ["--set", override]
    return args + (["--resume"] if resume else [])


def claim_for_launch(output: Path | None, resume: bool) -> tuple[Path, bool]:
    """Check ``output`` (default :func:`default_output_dir`) for a ``--nproc`` launch under
    its lock, before torchrun starts the workers; returns it and whether the run resumes."""
    output = output or default_output_dir()
    with locked_folder(output):  # rank 0 of the workers holds it while training
        resume = check_output_dir(output, resume)
    return output, resume


class FolderRun(NamedTuple):
    """What :func:`train_in_folder` did: the summary, the folder, and whether this process
    wrote it (rank 0; always true outside a distributed run)."""

    summary: dict[str, Any]
    output: Path
    writer: bool


def train_in_folder(config: Any, output: Path | None, *, registries: Any, resume: bool,
                    random_start: str | None = None,
                    files: dict[str, str] | None = None) -> FolderRun:
    """Train, evaluate and report one run into ``output``, locked against other writers.

    Works alike in one process and in every rank of a distributed run: one folder for all
    ranks, rank 0's choice, locked and checked by rank 0 alone (the others would find the
    files it has begun to write). A new run that fails before its first checkpoint leaves
    nothing behind (:func:`cleared_if_nothing_to_resume`).

    Args:
        config: The validated run config.
        output: The run folder (default :func:`default_output_dir`).
        registries: Plugin registries.
        resume: Continue the run in ``output``.
        random_start: A warning to give once (rank 0) before training, e.g. that the
            strategy keeps weights that are random.
        files: ``{name: text}`` written into a new run's folder before it trains (rank 0),
            e.g. the ``plan.yaml`` and ``plan.json`` of a planned run.

    Returns:
        The run's summary (``metrics.json``), its folder and whether this process wrote it.

    Raises:
        ConfigError: when ``output`` cannot take this run.
    """
    with D.session(config.train.device), ExitStack() as lock:
        output = D.from_rank_zero(output or default_output_dir())
        problem, existed = None, output.is_dir()
        if D.is_main():
            try:
                lock.enter_context(locked_folder(output))
                resume = check_output_dir(output, resume)
            except ConfigError as exc:
                problem = str(exc)
        problem, resume = D.from_rank_zero((problem, resume))
        if problem:
            raise ConfigError(problem)
        if files and not resume and D.is_main():
            output.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                atomic_write_text(output / name, text)
        if random_start and D.is_main():  # once: the --nproc launcher leaves it to rank 0
            notify(random_start)
        with cleared_if_nothing_to_resume(output, resume, existed=existed):
            summary = run_pipeline(config, output, registries=registries, resume=resume)
        return FolderRun(summary, output, D.is_main())
