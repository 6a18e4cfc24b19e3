"""``medxfer plan``: a commented run config for a dataset, from its fingerprint and a budget."""

from __future__ import annotations

from pathlib import Path

import typer

from medxfer.cli.console import err
from medxfer.cli.state import state_of


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command to ``app``."""

    @app.command("plan")
    def plan(
        ctx: typer.Context,
        data: Path = typer.Argument(..., help="A dataset: a folder in any layout `medxfer data "
                                    "inspect` reads, a MedMNIST .npz, a manifest or a datalist."),
        budget: str = typer.Option("15m", "--budget", help="Time the whole run may take "
                                   "(90s, 15m, 1h30m)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda: where the "
                                   "run will train (the probe measures there)."),
        output: Path | None = typer.Option(None, "--output", "-o", help="Write the plan to "
                                           "this new file (default: print it)."),
        fmt: str = typer.Option("auto", "--format", help="The dataset's layout (auto: "
                                "recognised; see docs/data-formats.md)."),
    ) -> None:
        """Plan a run: task, input size, intensity, backbone and weights, strategy, batch,
        epochs from the budget and a measured probe, augmentation, imbalance handling and
        ensemble, each with its reason. Run it with `medxfer run plan.yaml`, or plan and
        run in one step with `medxfer run DATA --budget 15m`."""
        from medxfer.planning import parse_budget
        from medxfer.workflows.plan import plan_dataset

        made = plan_dataset(data, budget=parse_budget(budget), output=output, device=device,
                            registries=state_of(ctx).registries, format=fmt)
        estimate = made.summary.get("estimate", {})
        if output is None:
            typer.echo(made.to_yaml(), nl=False)
        else:
            err().print(f"wrote {output}", highlight=False, markup=False)
        err().print(f"estimate: {estimate.get('epochs')} epochs of about "
                    f"{estimate.get('seconds_per_epoch')}s x {estimate.get('members', 1)} "
                    f"network(s) within {made.summary.get('budget_seconds')}s",
                    highlight=False, markup=False)
