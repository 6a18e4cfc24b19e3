"""``medxfer data``: look at a dataset before training on it."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to ``app``."""
    group = typer.Typer(help="Inspect datasets; make shifted copies.", no_args_is_help=True)

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
        from medxfer.cli.console import out, warn
        from medxfer.data.inspect import save_montage, summarize_dataset, summary_tables
        from medxfer.errors import ConfigError

        if output.exists() and not output.is_dir():
            raise ConfigError(f"--output {str(output)!r} is a file, not a folder; give the "
                              "folder the montage (<dataset-name>_montage.png) goes into")
        summary = summarize_dataset(path, format=format, max_read=max_read)
        console = out()
        for table in summary_tables(summary):
            console.print(table)
        for problem in summary.problems:
            warn(problem)
        target = save_montage(summary, output, n=samples)
        console.print(f"montage: {target}", highlight=False)

    @group.command("shift")
    def shift_cmd(
        path: Path = typer.Argument(None, help="MedMNIST .npz to copy with a shift."),
        output: Path = typer.Option(None, "--output", "-o", help="The shifted copy (.npz); "
                                    "must not exist yet."),
        recipe: Path = typer.Option(None, "--recipe", "-r", help="YAML file: {seed: N, "
                                    "corruptions: [{name: ..., **params}, ...]}."),
        op: list[str] = typer.Option(None, "--op", help="A corruption NAME or "
                                     "NAME:param=value,...; repeatable, applied in order "
                                     "after the recipe's."),
        seed: int = typer.Option(None, "--seed", help="Seed of the random corruptions "
                                 "(default: the recipe's, else 0)."),
        list_: bool = typer.Option(False, "--list", help="List the corruptions and exit."),
    ) -> None:
        """Make a shifted copy of a dataset with named scanner-like corruptions."""
        from medxfer.cli.console import out
        from medxfer.data.shift import CORRUPTIONS, load_recipe, shift_medmnist

        console = out()
        if list_:
            for c in CORRUPTIONS.values():
                params = ", ".join(f"{k}={d:g}" for k, (d, _) in c.params.items())
                console.print(f"{c.name:<11} {params:<22} {c.description}", highlight=False)
            return
        if path is None or output is None:
            from medxfer.errors import ConfigError

            raise ConfigError("medxfer data shift needs PATH and --output (and --recipe or "
                              "--op); `medxfer data shift --list` shows the corruptions")
        steps, recipe_seed = load_recipe(recipe, op or [])
        written = shift_medmnist(path, output, steps,
                                 seed=recipe_seed if seed is None else seed)
        console.print(f"shifted copy: {written} ("
                      + ", ".join(s["name"] for s in steps) + ")", highlight=False)

    app.add_typer(group, name="data")
