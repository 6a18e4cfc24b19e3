"""``medxfer predict``: apply a finished run's model to new image files."""

from __future__ import annotations

from pathlib import Path

import typer

from medxfer.cli.console import err
from medxfer.cli.state import state_of


def register(app: typer.Typer) -> None:
    """Add the ``predict`` command to ``app``."""

    @app.command("predict")
    def predict(
        ctx: typer.Context,
        inputs: list[Path] = typer.Argument(
            ..., help="Image files (any supported format), DICOM series folders, or whole "
            "datasets: a folder in any layout `medxfer data inspect` recognises, a manifest "
            "or a MONAI datalist (every image of their cases, and unlabelled test images)."),
        run: Path = typer.Option(..., "--run", help="Folder of a finished `medxfer run`."),
        output: str | None = typer.Option(
            None, "--output", "-o", help="Classification: CSV file to write, or a folder "
            "(an existing one, or a name ending in /) to write predictions.csv into "
            "(default: print to stdout). Segmentation: folder for the masks and masks.csv "
            "(required)."),
        dicom_seg: bool = typer.Option(
            False, "--dicom-seg", help="Segmentation: also write a DICOM SEG for each DICOM "
            "input (needs `pip install highdicom`)."),
        domain: str = typer.Option(
            "source", "--domain", help="Domain of the inputs, for runs with domain-specific "
            "layers (dsbn, adabn): source or target."),
    ) -> None:
        """Apply a trained run to new files.

        Classification writes one CSV row per input. Segmentation writes one mask per
        input into the --output folder, in the input's format and on its grid (DICOM
        series: NIfTI, plus DICOM SEG with --dicom-seg), and a masks.csv summary.
        """
        from medxfer.workflows.predict import predict_files

        done = predict_files(run, inputs, output, registries=state_of(ctx).registries,
                             dicom_seg=dicom_seg, domain=domain)
        if done.stdout:
            typer.echo(done.stdout, nl=False)
        for message in done.messages:
            err().print(message, highlight=False, markup=False)
