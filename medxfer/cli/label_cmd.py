"""``medxfer label``: serve runs in MONAI Label (3D Slicer, OHIF) and fine-tune them there."""

from __future__ import annotations

from pathlib import Path

import typer

from medxfer.cli.console import err


def register(app: typer.Typer) -> None:
    """Add the ``label`` command group to ``app``."""
    from medxfer.label.server import DEFAULT_HOST, DEFAULT_PORT

    label = typer.Typer(help="Serve runs in MONAI Label (3D Slicer, OHIF) and fine-tune them "
                        "from its train button. Needs the label extra: "
                        "pip install \"medxfer\\[label]\".", no_args_is_help=True)
    app.add_typer(label, name="label")

    @label.command("init")
    def init(
        run: list[Path] = typer.Option(..., "--run", help="Finished run to serve (repeat for "
                                       "several; each is a model named after its folder)."),
        app_dir: Path = typer.Option(..., "--app", help="New (or empty) folder for the app."),
    ) -> None:
        """Write a MONAI Label app folder that serves the runs."""
        from medxfer.label.appdir import write_app

        models = write_app(app_dir, run)
        for name, path in models.items():
            err().print(f"model {name!r} -> {path}", highlight=False)
        err().print(f"wrote the MONAI Label app {app_dir}; start it with `medxfer label serve "
                    f"--app {app_dir} --studies IMAGES`", highlight=False)

    @label.command("serve")
    def serve(
        studies: Path = typer.Option(..., "--studies", help="Folder of images to annotate "
                                     "(MONAI Label's datastore; labels are saved inside it)."),
        run: list[Path] = typer.Option(None, "--run", help="Finished run(s) to serve."),
        app_dir: Path | None = typer.Option(
            None, "--app", help="App folder: an existing one from `medxfer label init`, or a "
            "new one (default with --run: RUN/label_app)."),
        host: str = typer.Option(DEFAULT_HOST, "--host", help="Address to listen on "
                                 "(loopback by default; use 0.0.0.0 only on a trusted network)."),
        port: int = typer.Option(DEFAULT_PORT, "--port", help="Port to listen on."),
    ) -> None:
        """Start the MONAI Label server with a medxfer app (Ctrl-C stops it)."""
        from medxfer.errors import ConfigError
        from medxfer.label import require_monailabel
        from medxfer.label.appdir import APP_CONFIG, read_app, write_app
        from medxfer.label.server import check_studies
        from medxfer.label.server import serve as run_server

        require_monailabel()
        check_studies(studies)
        if app_dir is None:
            if not run:
                raise ConfigError("label serve: pass --run RUN (or --app APP from "
                                  "`medxfer label init`)")
            app_dir = run[0] / "label_app"
        if (app_dir / APP_CONFIG).is_file():
            served = read_app(app_dir)
            wanted = {p.expanduser().resolve() for p in run or []}
            if wanted and not wanted <= {p.resolve() for p in served.values()}:
                raise ConfigError(f"--app {str(app_dir)!r} serves other runs "
                                  f"({', '.join(map(str, served.values()))}); pass a new --app")
        elif run:
            write_app(app_dir, run)
        else:
            raise ConfigError(f"--app {str(app_dir)!r} is not a medxfer MONAI Label app; make "
                              "it with `medxfer label init --run RUN --app APP`")
        err().print(f"MONAI Label on http://{host}:{port} (app {app_dir}, studies {studies})",
                    highlight=False)
        run_server(app_dir, studies, host=host, port=port)
