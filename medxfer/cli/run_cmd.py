"""``medxfer run``: validate a config, then train, evaluate and report."""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import typer

from medxfer.cli.console import err, warn
from medxfer.cli.state import state_of
from medxfer.config import load_config
from medxfer.engine.preflight import check_config, random_start_warning
from medxfer.errors import ConfigError


def default_output_dir() -> Path:
    """``runs/run-YYYYmmdd-HHMMSS`` under the current folder."""
    return Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")


def check_output_dir(output: Path, resume: bool) -> None:
    """Refuse to write into a folder that already holds results, unless resuming.

    Raises:
        ConfigError: when ``output`` is a file, or holds a run and ``resume`` is false.
    """
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {str(output)!r} is a file, not a folder")
    if resume:
        if not output.is_dir():
            raise ConfigError(f"--resume: run folder {str(output)!r} does not exist")
        return
    if output.is_dir() and any(output.iterdir()):
        raise ConfigError(
            f"--output {str(output)!r} already holds files; results are never overwritten. "
            "Pass --resume to continue that run, or choose another folder.")


@contextmanager
def cleared_if_nothing_to_resume(output: Path, resume: bool) -> Iterator[None]:
    """Remove what a failed new run wrote into ``output`` when it left no checkpoint.

    A run that stops before its first checkpoint (a missing data file, weights that are
    not on this machine, an interrupted first epoch) has nothing ``--resume`` could
    continue; left in place, its ``config.yaml`` and ``splits.csv`` would make the same
    command refuse the folder. So the folder goes (or is emptied, if it existed empty
    before), and the command can simply be run again. Resumed runs and runs with a
    checkpoint anywhere below ``output`` (ensemble members included) are left as they
    are. Only the writing process (rank 0) removes anything.
    """
    from medxfer.engine import distributed as D
    from medxfer.engine.checkpoints import LAST_STATE

    existed = output.is_dir()
    fresh = not resume and not (existed and any(output.iterdir()))
    try:
        yield
    except BaseException:
        checkpoint = LAST_STATE.name  # a run's, or an ensemble member's, below output
        if fresh and D.is_main() and output.is_dir() and not any(output.rglob(checkpoint)):
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
        if resume and config is None and not overrides:
            config = output / "config.yaml"  # type: ignore[operator]
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
        if nproc is not None:
            output = output or default_output_dir()
            check_output_dir(output, resume)
            from medxfer.cli.launch import launch_run

            launch_run(nproc, run_arguments(config, output, overrides, resume))
            return
        with D.session(cfg.train.device):
            # One folder for all ranks: rank 0's choice, checked by rank 0 alone (the others
            # would find the files it has begun to write).
            output = D.from_rank_zero(output or default_output_dir())
            problem = None
            if D.is_main():
                try:
                    check_output_dir(output, resume)
                except ConfigError as exc:
                    problem = str(exc)
            problem = D.from_rank_zero(problem)
            if problem:
                raise ConfigError(problem)
            if random_start and D.is_main():  # once: the --nproc launcher leaves it to rank 0
                warn(random_start)
            from medxfer.engine.pipeline import run_pipeline

            with cleared_if_nothing_to_resume(output, resume):
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
