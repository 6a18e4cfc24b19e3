"""``medxfer run``: validate a config, then train, evaluate and report."""

from __future__ import annotations

from pathlib import Path

import typer

from medxfer.cli.console import err, warn
from medxfer.cli.state import state_of
from medxfer.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""

    @app.command("run")
    def run(
        ctx: typer.Context,
        config: Path | None = typer.Argument(
            None, help="Run config (YAML), or a dataset (a folder, .npz, manifest or datalist) "
            "to plan a run for and run it (see `medxfer plan`). Omit to train on the "
            "embedded sample data."),
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
            "each with CUDA, else CPU/gloo): starts torchrun itself, listening on 127.0.0.1 "
            "only. train.batch_size is the global batch, split between the processes."),
        nnodes: int = typer.Option(
            1, "--nnodes", min=1, help="With --nproc: the number of machines, each running "
            "this command with its own --node-rank (see docs/distributed.md)."),
        node_rank: int = typer.Option(
            0, "--node-rank", min=0, help="With --nnodes: this machine's rank, 0 on the "
            "machine --rdzv-endpoint names (it writes the run folder)."),
        rdzv_endpoint: str | None = typer.Option(
            None, "--rdzv-endpoint", help="With --nnodes: HOST:PORT of node rank 0, the same "
            "on every node; its store listens there on every interface."),
        budget: str | None = typer.Option(
            None, "--budget", help="With a dataset: the time the whole run may take (90s, "
            "15m, 1h30m; default 15m); the plan fits epochs, input size and ensemble into it."),
        search: int | None = typer.Option(
            None, "--search", help="With a dataset: first compare up to N candidate plans "
            "(learning rate, strategy, input size, regularisation, backbone) by successive "
            "halving on the validation split, inside the same budget, then run the best."),
    ) -> None:
        """Fine-tune a pretrained CNN on a dataset and write metrics, figures and a report.

        Under torchrun (RANK/WORLD_SIZE/LOCAL_RANK set) the run is distributed: each
        process trains on its share of the data, rank 0 writes the outputs.
        """
        from medxfer.config import load_config

        if config is not None and is_dataset(config):
            _run_dataset(ctx, config, output, overrides, budget or DEFAULT_BUDGET,
                         resume=resume, check=check,
                         nproc=nproc if nnodes == 1 else nproc or 1, search=search)
            return
        if search is not None:
            raise ConfigError(f"--search compares candidate plans for a dataset (`medxfer run "
                              f"DATA --search {search}`); a config is run as it is written")
        if budget is not None:
            raise ConfigError(f"--budget plans a run for a dataset (`medxfer run DATA --budget "
                              f"{budget}`); a config's run is limited by train.time_limit "
                              "(seconds): --set train.time_limit=900")
        if resume and output is None:
            raise ConfigError("--resume needs --output DIR naming the run to continue")
        saved = output / "config.yaml" if output is not None else None
        if resume and config is None and saved is not None and saved.is_file():
            config = saved  # the run's own config, with any --set on top
        # before the heavy imports below: a bad config file is refused at once
        cfg = load_config(config, overrides)
        from medxfer.training import distributed as D
        from medxfer.workflows.preflight import check_config, random_start_warning
        from medxfer.workflows.run_folder import (claim_for_launch, finished, run_arguments,
                                                  train_in_folder)

        if nproc is not None and D.launched_by_torchrun():
            raise ConfigError("--nproc starts torchrun itself; under torchrun omit --nproc")
        from medxfer.cli.launch import parse_nodes

        nodes = parse_nodes(nnodes, node_rank, rdzv_endpoint)
        if not nodes.single and nproc is None:
            raise ConfigError(f"--nnodes {nnodes}: give --nproc N too, the processes to start "
                              "on this machine (one per GPU)")
        registries = state_of(ctx).registries
        # the batch split too, before torchrun starts any worker for --nproc
        strategy = check_config(cfg, registries, processes=(nproc or 1) * nodes.count)
        random_start = random_start_warning(cfg, registries, strategy)
        if check:
            from medxfer.workflows.preflight import check_network

            if random_start:
                warn(random_start)
            from medxfer.plugin_kit.attributes import uses_pretrained

            check_network(cfg, registries, use_weights=uses_pretrained(strategy))
            err().print("config, plugins, data and weights are valid")
            return
        if resume and output is not None and finished(output):
            err().print(f"{str(output)!r} has finished (its metrics.json is written): nothing "
                        "to resume, and its results are left as they are. To train again, "
                        "choose a new --output folder", highlight=False)
            return
        if nproc is not None:
            if nodes.rank == 0:  # the node of global rank 0, which writes the folder
                output, resume = claim_for_launch(output, resume)
            elif output is None:
                raise ConfigError("--node-rank > 0 needs --output: the run folder node rank "
                                  "0 writes (give every node the same command)")
            from medxfer.cli.launch import launch_run

            launch_run(nproc, run_arguments(config, output, overrides, resume), nodes)
            return
        done = train_in_folder(cfg, output, registries=registries, resume=resume,
                               random_start=random_start)
        if done.writer:
            print_summary(done.summary, done.output)


#: The time ``medxfer run DATA`` plans for when no ``--budget`` is given.
DEFAULT_BUDGET = "15m"

#: What a run config file is called; anything else given to `run` is taken as a dataset.
CONFIG_SUFFIXES = (".yaml", ".yml")


def is_dataset(path: Path) -> bool:
    """Whether ``medxfer run PATH`` names a dataset (a folder, or a data file such as a
    MedMNIST ``.npz``, a manifest or a datalist) rather than a YAML config."""
    return path.is_dir() or (path.suffix.lower() not in CONFIG_SUFFIXES and path.exists())


def _run_dataset(ctx: typer.Context, data: Path, output: Path | None, overrides: list[str],
                 budget: str, *, resume: bool, check: bool, nproc: int | None,
                 search: int | None = None) -> None:
    """``medxfer run DATA``: plan within ``--budget``, then run the plan."""
    from medxfer.planning import parse_budget
    from medxfer.workflows.plan import plan_dataset, run_dataset

    if resume:
        raise ConfigError(f"--resume continues a run folder: `medxfer run --resume --output "
                          f"DIR` (the planned run's folder keeps its plan), not {str(data)!r}")
    if nproc is not None:
        raise ConfigError("--nproc with a dataset: plan first (`medxfer plan DATA --output "
                          "plan.yaml`), then `medxfer run plan.yaml --nproc N`")
    if search is not None and search < 2:
        raise ConfigError(f"--search {search}: give at least 2 candidate plans to compare "
                          "(or leave --search out)")
    seconds = parse_budget(budget)
    registries = state_of(ctx).registries
    if check:
        from medxfer.config import apply_overrides, validate_config
        from medxfer.workflows.preflight import check_config, check_network

        plan = plan_dataset(data, budget=seconds, registries=registries)
        cfg = validate_config(apply_overrides(plan.config, overrides), source="the plan",
                              overrides=overrides)
        check_config(cfg, registries)
        check_network(cfg, registries)
        err().print("the plan, its plugins, data and weights are valid", highlight=False)
        return
    done = run_dataset(data, budget=seconds, output=output, registries=registries,
                       overrides=overrides, search=search or 0)
    if done.writer:
        print_summary(done.summary, done.output)


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
