"""``medxfer data``: look at a dataset before training on it."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to ``app``."""
    group = typer.Typer(help="Inspect datasets.", no_args_is_help=True)

    @group.command("inspect")
    def inspect_cmd(
        path: Path = typer.Argument(
            ..., help="Dataset: MedMNIST .npz, MSD folder, manifest .csv/.json, class folders "
            "or a DICOM folder."),
        output: Path = typer.Option(
            Path("."), "--output", "-o", help="Folder for <dataset-name>_montage.png "
            "(an existing file gets a numeric suffix, never overwritten)."),
        format: str = typer.Option("auto", "--format", help="Layout: auto, folder, manifest, "
                                   "medmnist, msd, dicom."),
        max_read: int = typer.Option(64, "--max-read", min=1,
                                     help="Read at most this many files for statistics."),
        samples: int = typer.Option(16, "--samples", min=1, help="Images in the montage."),
    ) -> None:
        """Counts per class and split, shapes, spacings, intensities, patients, and a montage."""
        from medxfer.cli.console import out
        from medxfer.data.inspect import save_montage, summarize_dataset, summary_tables

        summary = summarize_dataset(path, format=format, max_read=max_read)
        console = out()
        for table in summary_tables(summary):
            console.print(table)
        target = save_montage(summary, output, n=samples)
        console.print(f"montage: {target}", highlight=False)

    app.add_typer(group, name="data")
