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
        allow_origin: list[str] = typer.Option(
            None, "--allow-origin", help="Web origin (scheme://host:port) whose pages may call "
            "the server, e.g. a web viewer's; repeat for several. Other web pages are refused "
            "(3D Slicer is not a web page and needs none)."),
    ) -> None:
        """Start the MONAI Label server with a medxfer app (Ctrl-C stops it)."""
        from medxfer.errors import ConfigError
        from medxfer.label import require_monailabel
        from medxfer.label.appdir import APP_CONFIG, read_app, write_app
        from medxfer.label.server import check_studies, server_env
        from medxfer.label.server import serve as run_server

        require_monailabel()
        check_studies(studies)
        server_env(allow_origins=allow_origin or [])  # refuse a malformed origin before init
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
        run_server(app_dir, studies, host=host, port=port, allow_origins=allow_origin or [])

    @label.command("restore")
    def restore(
        app_dir: Path = typer.Option(..., "--app", help="The app folder."),
        model: str = typer.Option(..., "--model", help="The model (as /info/ names it)."),
        run: str | None = typer.Option(
            None, "--run", help="Run to serve: 'original' or a promoted fine-tuned run "
            "(`medxfer label history` lists them). Default: the run served before."),
    ) -> None:
        """Serve an earlier run of a model again (a running server follows at once)."""
        from medxfer.label.appdir import read_app
        from medxfer.label.served import restore as restore_run

        original = _original(read_app(app_dir), model, app_dir)
        served = restore_run(app_dir, model, original, run)
        err().print(f"model {model!r} now serves run {served!r}", highlight=False)

    @label.command("history")
    def history(
        app_dir: Path = typer.Option(..., "--app", help="The app folder."),
        model: str = typer.Option(..., "--model", help="The model (as /info/ names it)."),
    ) -> None:
        """List a model's fine-tunings (scores and decisions), failures and restores."""
        from medxfer.label.appdir import read_app
        from medxfer.label.served import ORIGINAL, read_pointer

        _original(read_app(app_dir), model, app_dir)
        pointer = read_pointer(app_dir, model)
        for event in pointer["history"]:
            scores = ""
            if "candidate_score" in event:
                scores = (f" served {event['current_score']:.4f} vs candidate "
                          f"{event['candidate_score']:.4f} on {len(event.get('held_out', []))} "
                          "held-out case(s)")
            what = event.get("candidate") or event.get("run")
            error = f": {event['error']}" if event.get("error") else ""
            typer.echo(f"{event.get('time')}  {event.get('event'):9} {what}{scores}{error}")
        typer.echo(f"serving: {pointer['served'] or ORIGINAL}")


def _original(models: dict[str, Path], model: str, app_dir: Path) -> Path:
    """The original run of ``model``.

    Raises:
        ConfigError: for a model the app does not serve.
    """
    from medxfer.errors import ConfigError

    if model not in models:
        raise ConfigError(f"--app {str(app_dir)!r} has no model {model!r}; its models: "
                          f"{', '.join(models)}")
    return models[model]
