"""Builds the Typer application and runs it with medxfer's error handling."""

from __future__ import annotations

import os
import warnings
from typing import Any

import typer

from medxfer.cli import (
    compare_cmd,
    config_cmd,
    ensemble_cmd,
    export_cmd,
    plan_cmd,
    plugins_cmd,
    predict_cmd,
    pretrain_cmd,
    run_cmd,
)
from medxfer.cli.console import error, warn
from medxfer.cli.state import CliState
from medxfer.errors import MedxferError, MedxferWarning
from medxfer.plugins import PluginLoadWarning, create_plugin_manager


def _version_callback(value: bool) -> None:
    if value:
        from medxfer import __version__

        typer.echo(f"medxfer {__version__}")
        raise typer.Exit()


def build_app(state: CliState) -> typer.Typer:
    """The root ``medxfer`` app with core commands and commands added by plugins."""
    app = typer.Typer(
        name="medxfer",
        help="Transfer learning for medical images: adapt pretrained CNNs to small 2D/3D "
        "medical datasets.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"obj": state},
    )

    @app.callback()
    def root(
        version: bool = typer.Option(False, "--version", callback=_version_callback,
                                     is_eager=True, help="Print the version and exit."),
    ) -> None:
        """medxfer command-line interface."""

    run_cmd.register(app)
    pretrain_cmd.register(app)
    plan_cmd.register(app)
    compare_cmd.register(app)
    plugins_cmd.register(app)
    config_cmd.register(app)
    predict_cmd.register(app)
    ensemble_cmd.register(app)
    export_cmd.register(app)
    _register_optional(app, "medxfer.cli.data_cmd")
    _register_optional(app, "medxfer.cli.label_cmd")
    state.manager.hook.medxfer_register_commands(app=app)
    return app


def _register_optional(app: typer.Typer, module_name: str) -> None:
    """Add the commands of a core CLI module that is present."""
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return
        raise
    module.register(app)


def _exception_types(*names: str) -> tuple[type[BaseException], ...]:
    """The click exception classes named ``module:Class`` that this typer/click uses.

    typer >= 0.20 vendors click as ``typer._click`` with its own ``Exit``/``Abort`` in
    ``typer.exceptions``; older typer raises click's. Both are caught.
    """
    import importlib

    found: list[type[BaseException]] = []
    for name in names:
        module_name, _, cls_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), cls_name)
        except (ImportError, AttributeError):
            continue
        if cls not in found:
            found.append(cls)
    return tuple(found)


_EXIT_TYPES = _exception_types("click.exceptions:Exit", "typer.exceptions:Exit")
_ABORT_TYPES = _exception_types("click.exceptions:Abort", "typer.exceptions:Abort")
_USAGE_TYPES = _exception_types("click.exceptions:ClickException",
                                "typer._click.exceptions:ClickException")


class _Interrupted(Exception):
    """Ctrl-C (KeyboardInterrupt) in the command ``name`` called with ``params``.

    typer turns a KeyboardInterrupt into a silent exit 130, so :func:`_report_interrupts`
    raises this instead before typer sees it.
    """

    def __init__(self, name: str | None, params: dict[str, Any]) -> None:
        super().__init__(name)
        self.name = name
        self.params = params


def _report_interrupts(command: Any) -> None:
    """Make ``command`` and each of its subcommands raise :class:`_Interrupted` for Ctrl-C.

    The command's own handling of the interrupt (a new run removing its folder when it
    saved no checkpoint) has happened when this is raised.
    """
    invoke = command.invoke

    def invoke_interruptible(ctx: Any) -> Any:
        try:
            return invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted(ctx.info_name, dict(ctx.params)) from None

    command.invoke = invoke_interruptible
    for subcommand in (getattr(command, "commands", None) or {}).values():
        _report_interrupts(subcommand)


def _interrupted_message(exc: BaseException) -> str:
    """Says "interrupted" and, for a training command, how to go on from where it stopped."""
    name = getattr(exc, "name", None)
    params = getattr(exc, "params", {})
    if os.environ.get("RANK", "0") != "0" and os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return "interrupted"  # rank 0 says how to go on
    if name == "compare":
        return "interrupted; run the same command again to continue the study (finished " \
            "cells are kept)"
    if name not in ("run", "pretrain") or params.get("check"):
        return "interrupted"
    output = params.get("output")
    if output is None:  # run's default folder, runs/run-<timestamp>
        return "interrupted; a run that saved a checkpoint continues with `medxfer run " \
            "--resume --output DIR` (DIR: its folder under runs/)"
    from pathlib import Path

    from medxfer.training.checkpoints import has_checkpoint

    output = Path(output)
    if output.is_dir() and has_checkpoint(output):
        if name == "run":
            return f"interrupted; continue the run with `medxfer run --resume --output {output}`"
        return "interrupted; run the same command with --resume to continue it"
    return "interrupted before the run saved a checkpoint, so there is nothing to resume; " \
        "run the same command again to start it afresh"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script exits with it).

    User errors (:class:`medxfer.MedxferError`) are printed as one message without a
    traceback and exit with their code (2 for bad config, data or plugins). Ctrl-C prints
    "interrupted" (with how to continue an interrupted run) and exits with 130. In a torchrun
    worker every error is also written to torchrun's error file, messages name the rank,
    and a rank that only lost its connection to a failed peer says so in one line.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("always", MedxferWarning)
        warnings.showwarning = _shown_as_lines(warnings.showwarning)
        return _main(argv)


def _shown_as_lines(show: Any) -> Any:
    """A ``warnings.showwarning`` that prints medxfer's own warnings as one ``warning:``
    line and leaves the others to ``show``."""

    def show_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, MedxferWarning):
            warn(str(message))
        else:
            show(message, category, *args, **kwargs)

    return show_warning


def _main(argv: list[str] | None) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PluginLoadWarning)
            manager = create_plugin_manager()
        for broken in manager.broken:
            warn(broken.describe() + " (skipped)")
        state = CliState(manager)
        command = typer.main.get_command(build_app(state))
        _report_interrupts(command)
        result = command.main(args=argv, prog_name="medxfer", standalone_mode=False)
    except (_Interrupted, KeyboardInterrupt) as exc:
        error(_worker_prefix() + _interrupted_message(exc))
        return 130
    except MedxferError as exc:
        _record_for_torchrun(exc)
        error(_worker_prefix() + str(exc))
        return exc.exit_code
    except _EXIT_TYPES as exc:
        return exc.exit_code
    except _USAGE_TYPES as exc:
        exc.show()
        return exc.exit_code
    except _ABORT_TYPES:
        error("aborted")
        return 130
    except Exception as exc:
        _record_for_torchrun(exc)
        from medxfer.training.distributed import is_peer_failure

        if os.environ.get("TORCHELASTIC_ERROR_FILE") and is_peer_failure(exc):
            # another rank failed first: its message is the one that matters
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            error(f"{_worker_prefix()}stopped because another rank failed ({first})")
            return 1
        raise
    return result if isinstance(result, int) else 0


def _worker_prefix() -> str:
    """``"rank N: "`` in a torchrun worker (its messages say whose they are), else ``""``."""
    return f"rank {os.environ['RANK']}: " if os.environ.get("TORCHELASTIC_ERROR_FILE") \
        and os.environ.get("RANK") else ""


def _record_for_torchrun(exc: BaseException) -> None:
    """In a torchrun worker, leave ``exc`` in torchrun's error file so that the launcher
    reports this rank's message (call it inside the ``except`` block)."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from medxfer.training.distributed import record_error

        record_error(exc)
