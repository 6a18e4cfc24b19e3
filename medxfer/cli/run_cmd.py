"""``medxfer run``: validate a config, then train, evaluate and report."""

from __future__ import annotations

import shutil
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import typer

from medxfer.cli.console import err, warn
from medxfer.cli.state import state_of
from medxfer.config import load_config
from medxfer.engine.preflight import check_config, random_start_warning
from medxfer.errors import ConfigError
from medxfer.locking import locked_folder


def default_output_dir() -> Path:
    """``runs/run-YYYYmmdd-HHMMSS`` under the current folder."""
    return Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")


#: What a run writes before its first checkpoint (``checkpoints/last.pt``): a folder
#: holding only these, and no ``metrics.json``, is a run that stopped before it had anything
#: to resume.
BEFORE_FIRST_CHECKPOINT = frozenset({"config.yaml", "splits.csv", "cache", "tensorboard",
                                     "model.safetensors", "model.json", "checkpoints",
                                     "members"})


def never_checkpointed(output: Path) -> bool:
    """Whether ``output`` holds a medxfer run killed before its first checkpoint (SIGKILL or
    SIGTERM leave its ``config.yaml`` and ``splits.csv``): nothing of it can be resumed."""
    from medxfer.engine.checkpoints import has_checkpoint
    from medxfer.locking import entries

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
    from medxfer.locking import entries

    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {str(output)!r} is a file, not a folder")
    if resume and not output.is_dir():
        raise ConfigError(f"--resume: run folder {str(output)!r} does not exist")
    if not output.is_dir() or not entries(output):
        return False
    if never_checkpointed(output):
        warn(f"{str(output)!r} holds a run that stopped before its first checkpoint (nothing "
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
    from medxfer.engine import distributed as D
    from medxfer.engine.checkpoints import has_checkpoint
    from medxfer.locking import entries

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


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""

    @app.command("run")
    def run(
        ctx: typer.Context,
        config: Path | None = typer.Argument(
            None, help="Run config (YAML). Omit to train on the embedded sample data."),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="Run folder (default: runs/run-<timestamp>)."),
        overrides: list[str] = typer.Option(
            [], "--set", help="Override a config key, e.g. --set train.epochs=3 (repeatable)."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue the run in --output from its last checkpoint."),
        check: bool = typer.Option(
            False, "--check", help="Validate the config, its plugins and their options, "
            "read the data's first image and build the network with its weights, then stop."),
        nproc: int | None = typer.Option(
            None, "--nproc", min=1,
            help="Train with DistributedDataParallel in N processes on this machine (one GPU "
            "each with CUDA, else CPU/gloo): starts torchrun --standalone itself. "
            "train.batch_size is the global batch, split between the processes. For several "
            "machines run torchrun with its rendezvous options (--nnodes, --rdzv-endpoint, "
            "...) and -m medxfer run CONFIG instead."),
    ) -> None:
        """Fine-tune a pretrained CNN on a dataset and write metrics, figures and a report.

        Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) the run is distributed: each
        process trains on its share of the data, rank 0 writes the outputs.
        """
        from medxfer.engine import distributed as D

        if resume and output is None:
            raise ConfigError("--resume needs --output DIR naming the run to continue")
        saved = output / "config.yaml" if output is not None else None
        if resume and config is None and saved is not None and saved.is_file():
            config = saved  # the run's own config, with any --set on top
        if nproc is not None and D.launched_by_torchrun():
            raise ConfigError("--nproc starts torchrun itself; under torchrun omit --nproc")
        cfg = load_config(config, overrides)
        registries = state_of(ctx).registries
        # the batch split too, before torchrun starts any worker for --nproc
        strategy = check_config(cfg, registries, processes=nproc or 1)
        random_start = random_start_warning(cfg, registries, strategy)
        if check:
            from medxfer.engine.preflight import check_network

            if random_start:
                warn(random_start)
            check_network(cfg, registries, use_weights=getattr(strategy, "uses_pretrained", True))
            err().print("config, plugins, data and weights are valid")
            return
        if resume and output is not None and finished(output):
            err().print(f"{str(output)!r} has finished (its metrics.json is written): nothing "
                        "to resume, and its results are left as they are. To train again, "
                        "choose a new --output folder", highlight=False)
            return
        if nproc is not None:
            output = output or default_output_dir()
            with locked_folder(output):  # rank 0 of the workers holds it while training
                resume = check_output_dir(output, resume)
            from medxfer.cli.launch import launch_run

            launch_run(nproc, run_arguments(config, output, overrides, resume))
            return
        with D.session(cfg.train.device), ExitStack() as lock:
            # One folder for all ranks: rank 0's choice, locked and checked by rank 0 alone
            # (the others would find the files it has begun to write).
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
            if random_start and D.is_main():  # once: the --nproc launcher leaves it to rank 0
                warn(random_start)
            from medxfer.engine.pipeline import run_pipeline

            with cleared_if_nothing_to_resume(output, resume, existed=existed):
                summary = run_pipeline(cfg, output, registries=registries, resume=resume)
            if D.is_main():
                print_summary(summary, output)


def run_arguments(config: Path | None, output: Path, overrides: list[str],
                  resume: bool) -> list[str]:
    """The ``medxfer run`` arguments a ``--nproc`` launcher passes to every worker."""
    args = [str(config)] if config is not None else []
    args += ["--output", str(output)]
    for override in overrides:
        args += ["--set", override]
    return args + (["--resume"] if resume else [])


def print_summary(summary: dict, output: Path) -> None:
    """Print the test metrics and where the report is."""
    from rich.table import Table

    from medxfer.cli.console import out

    table = Table(title=f"{summary.get('backbone')} / "
                        f"{(summary.get('strategy') or {}).get('name')} — test split")
    table.add_column("metric")
    table.add_column("value")
    table.add_column("95% CI")
    ci = summary.get("ci95") or {}
    for key, value in (summary.get("test") or {}).items():
        if key in ("n",) or value is None:
            continue
        lo_hi = ci.get(key)
        interval = f"[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi and None not in lo_hi else ""
        table.add_row(key, f"{value:.4f}", interval)
    console = out()
    console.print(table)
    console.print(f"report: {output / 'report.html'}  (train {summary['train_seconds']:.0f} s)")
