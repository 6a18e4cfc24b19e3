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
            ..., help="Dataset: class folders, images/ + masks/, an MSD or nnU-Net folder, a "
            "MONAI datalist or manifest (.csv/.json), a MedMNIST .npz, DICOM series folders."),
        output: Path = typer.Option(
            Path("."), "--output", "-o", help="Folder for <dataset-name>_montage.png "
            "(an existing file gets a numeric suffix, never overwritten)."),
        format: str = typer.Option("auto", "--format", help="Layout (as data.format): auto, "
                                   "folder, images, images_masks, manifest, monai_datalist, "
                                   "msd, nnunet, medmnist, dicom."),
        max_read: int = typer.Option(64, "--max-read", min=1,
                                     help="Read at most this many cases whole for the "
                                     "intensities (headers and masks are read for every case)."),
        samples: int = typer.Option(16, "--samples", min=1, help="Images in the montage."),
        as_json: bool = typer.Option(
            False, "--json", help="Print the report as JSON (schema in docs/data-formats.md) "
            "and write no montage."),
    ) -> None:
        """Layout, task, cases per split and class, sizes, spacings, intensities, masks,
        excluded files and what a run would refuse or warn about; and a montage."""
        from medxfer.cli.console import error, out, warn
        from medxfer.data.inspect import summarize_dataset, summary_json
        from medxfer.errors import ConfigError

        if not as_json and output.exists() and not output.is_dir():
            raise ConfigError(f"--output {str(output)!r} is a file, not a folder; give the "
                              "folder the montage (<dataset-name>_montage.png) goes into")
        summary = summarize_dataset(path, format=format, max_read=max_read)
        if as_json:
            import json

            typer.echo(json.dumps(summary_json(summary), indent=2))
            _refuse_problems(summary.problems, listed="in its 'problems'")
            return
        from medxfer.data.inspect_report import summary_tables
        from medxfer.data.montage import save_montage

        console = out()
        for table in summary_tables(summary):
            console.print(table)
        for notice in summary.datalist.notices:
            console.print(f"note: {notice}", highlight=False)
        for line in summary.warnings:
            warn(line)
        for line in summary.problems:
            error(line)
        target = save_montage(summary, output, n=samples)
        console.print(f"montage: {target}", highlight=False)
        _refuse_problems(summary.problems, listed="above")

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


def _refuse_problems(problems: list[str], *, listed: str) -> None:
    """Exit 2 (a :class:`DataError`) after the report when a run would refuse the data."""
    from medxfer.errors import DataError

    if problems:
        raise DataError(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} a run "
                        f"would refuse (listed {listed}); fix them before training")
