"""``medxfer data``: look at a dataset before training on it."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to ``app``."""
    group = typer.Typer(help="Inspect datasets; make shifted copies; pack them in shards.", no_args_is_help=True)

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

    @group.command("pack")
    def pack_cmd(
        path: Path = typer.Argument(..., help="Dataset (any layout `medxfer data inspect` "
                                    "reads); with --verify, the pack to check."),
        output: Path = typer.Option(None, "--output", "-o", help="The pack folder (must not "
                                    "exist or be empty, unless --overwrite)."),
        config: Path = typer.Option(None, "--config", "-c", help="Run config whose data.* "
                                    "settings (split, limit, classes, format) and task "
                                    "choose and split the cases; default: a run's defaults "
                                    "with the task the labels show."),
        overrides: list[str] = typer.Option([], "--set", help="Override a config key, e.g. "
                                            "--set data.split.seed=1 (repeatable)."),
        shard_size: str = typer.Option("1GB", "--shard-size", help="Size a shard may reach "
                                       "before the next starts (1GB, 500MB, 64MiB)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing "
                                       "--output, once the new pack is complete."),
        verify: bool = typer.Option(False, "--verify", help="Check the pack PATH instead: "
                                    "every shard's size and SHA-256, every member's place."),
    ) -> None:
        """Write a dataset as tar shards (WebDataset naming) and an index, split as a run
        splits it; `medxfer run --set data.path=PACK` then reads it shard by shard."""
        from medxfer.cli.console import out
        from medxfer.errors import ConfigError, DataError

        console = out()
        if verify:
            from medxfer.data.packed_shards import verify_pack

            if not (path / "index.json").is_file():
                raise DataError(f"{str(path)!r} is not a pack (no index.json); give the "
                                "folder `medxfer data pack` wrote")
            problems = verify_pack(path)
            if problems:
                raise DataError(f"{problems[0]}" + (f" (and {len(problems) - 1} more "
                                                     "problems)" if len(problems) > 1 else ""))
            console.print(f"pack {path}: every shard matches its index", highlight=False)
            return
        if output is None:
            raise ConfigError("medxfer data pack needs --output DIR (a new folder for the pack)")
        from medxfer.data.pack_writer import pack_dataset, pack_run_config, parse_size
        from medxfer.progress import progress

        size = parse_size(shard_size)
        cfg = pack_run_config(path, config, overrides)
        index = pack_dataset(cfg, output, shard_size=size, overwrite=overwrite,
                             progress=lambda n: progress("packing", n, unit="cases"))
        counts = ", ".join(f"{s} {n}" for s, n in index["split_counts"].items())
        console.print(f"pack: {output} ({len(index['shards'])} shards; {counts}); train on it "
                      f"with `medxfer run --set data.path={output}`", highlight=False)

    app.add_typer(group, name="data")


def _refuse_problems(problems: list[str], *, listed: str) -> None:
    """Exit 2 (a :class:`DataError`) after the report when a run would refuse the data."""
    from medxfer.errors import DataError

    if problems:
        raise DataError(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} a run "
                        f"would refuse (listed {listed}); fix them before training")
