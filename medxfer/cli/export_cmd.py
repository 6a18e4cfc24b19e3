"""``medxfer export``: a finished run's model in a format others can run without medxfer."""

from __future__ import annotations

from pathlib import Path

import typer

from medxfer.cli.console import err, warn
from medxfer.cli.state import state_of


def register(app: typer.Typer) -> None:
    """Add the ``export`` command to ``app``."""

    @app.command("export")
    def export(
        ctx: typer.Context,
        run: Path = typer.Option(..., "--run", help="Folder of a finished `medxfer run`."),
        fmt: str = typer.Option(..., "--format", "-f",
                                help="torchscript, onnx or monai-bundle."),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="New (or empty) folder to write; default: "
            "RUN/export/FORMAT."),
        domain: str = typer.Option(
            "source", "--domain", help="Runs with domain-specific layers (dsbn, adabn): the "
            "domain whose layers the exported model uses, source or target."),
    ) -> None:
        """Export a run's model: TorchScript, ONNX, or a MONAI bundle.

        The exported model is checked against medxfer's own outputs before it is kept
        (tolerance and measured difference in export.json). Existing outputs are never
        overwritten.
        """
        from medxfer.workflows.predict import unfinished_warning
        from medxfer.workflows.export import export_run

        target = output if output is not None else run / "export" / fmt
        result = export_run(run, fmt, target, registries=state_of(ctx).registries,
                            domain=domain)
        err().print(f"wrote {result.fmt} export to {result.output} (max |logit difference| "
                    f"{result.check.max_abs_diff:.2g}, tolerance atol={result.check.atol} "
                    f"rtol={result.check.rtol})", highlight=False)
        unfinished = unfinished_warning(run)
        if unfinished:
            warn(unfinished)
