"""Builds the Typer application and runs it with medxfer's error handling."""

from __future__ import annotations

import os
import signal
import threading
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
from medxfer.cli.flags import tidy_flags
from medxfer.cli.state import CliState
from medxfer.errors import MedxferError, MedxferWarning, OutputError
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a job scheduler), raised where the program is, so
    that a command stops as it does for Ctrl-C: it cleans up, says so and how to go on,
    and exits with 143 (128 + SIGTERM, as a process killed by it would)."""


class _Interrupted(Exception):
    """Ctrl-C (KeyboardInterrupt) or SIGTERM (:class:`Terminated`) in the command ``name``
    called with ``params``.

    typer turns a KeyboardInterrupt into a silent exit 130, so :func:`_report_failures`
    raises this instead before typer sees it.
    """

    def __init__(self, name: str | None, params: dict[str, Any], terminated: bool) -> None:
        super().__init__(name)
        self.name = name
        self.params = params
        self.terminated = terminated


def _report_failures(command: Any) -> None:
    """Make ``command`` and each of its subcommands raise :class:`_Interrupted` for Ctrl-C
    and SIGTERM, and an :class:`~medxfer.errors.OutputError` for an output that cannot be
    written (a full or read-only disk), with how to go on.

    The command's own handling of the interrupt (a new run removing its folder when it
    saved no checkpoint) has happened when this is raised.
    """
    invoke = command.invoke
    leaf = getattr(command, "commands", None) is None

    def invoke_reporting(ctx: Any) -> Any:
        try:
            return invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupted(ctx.info_name, dict(ctx.params),
                               isinstance(exc, Terminated)) from None
        except Exception as exc:
            if not leaf or (isinstance(exc, MedxferError) and not isinstance(exc, OutputError)):
                raise
            problem = _output_problem(exc, ctx.params)
            if problem is None:
                raise
            raise OutputError(problem + _how_to_go_on(ctx.info_name, ctx.params)) from None

    command.invoke = invoke_reporting
    for subcommand in (getattr(command, "commands", None) or {}).values():
        _report_failures(subcommand)


def _output_problem(exc: Exception, params: dict[str, Any]) -> str | None:
    """The message of an output that cannot be written, naming it (else the command's
    ``--output``); ``None`` for other errors."""
    if isinstance(exc, OutputError):
        return str(exc)
    from medxfer.io import output_error

    # raised outside medxfer's own writes (TensorBoard's, a library's): a full or read-only
    # disk is surely a write, a refused permission may be a read
    problem = output_error(exc, writing=False, near=params.get("output"))
    return None if problem is None else str(problem)


def _how_to_go_on(name: str | None, params: dict[str, Any]) -> str:
    """For a run that stopped on an output error after its first checkpoint: that the
    checkpoint is intact and how to continue from it."""
    output = params.get("output")
    if name not in ("run", "pretrain") or output is None:
        return ""
    from pathlib import Path

    from medxfer.training.checkpoints import has_checkpoint

    if not (Path(output).is_dir() and has_checkpoint(output)):
        return ""
    again = f"`medxfer run --resume --output {output}`" if name == "run" else \
        "the same command with --resume"
    return f". The run's last checkpoint is intact: once it can be written, continue it " \
        f"with {again}"


def _terminated(exc: BaseException) -> bool:
    """Whether ``exc`` (a KeyboardInterrupt or :class:`_Interrupted`) came from SIGTERM."""
    return isinstance(exc, Terminated) or getattr(exc, "terminated", False)


def _interrupted_message(exc: BaseException) -> str:
    """Says "interrupted" (or "terminated" for SIGTERM) and, for a training command, how to
    go on from where it stopped."""
    name = getattr(exc, "name", None)
    params = getattr(exc, "params", {})
    stopped = "terminated (SIGTERM)" if _terminated(exc) else "interrupted"
    if os.environ.get("RANK", "0") != "0" and os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return stopped  # rank 0 says how to go on
    if name == "compare":
        return f"{stopped}; run the same command again to continue the study (finished " \
            "cells are kept)"
    if name not in ("run", "pretrain") or params.get("check"):
        return stopped
    output = params.get("output")
    if output is None:  # run's default folder, runs/run-<timestamp>
        return f"{stopped}; a run that saved a checkpoint continues with `medxfer run " \
            "--resume --output DIR` (DIR: its folder under runs/)"
    from pathlib import Path

    from medxfer.training.checkpoints import has_checkpoint

    output = Path(output)
    if output.is_dir() and has_checkpoint(output):
        if name == "run":
            return f"{stopped}; continue the run with `medxfer run --resume --output {output}`"
        return f"{stopped}; run the same command with --resume to continue it"
    return f"{stopped} before the run saved a checkpoint, so there is nothing to resume; " \
        "run the same command again to start it afresh"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script exits with it).

    User errors (:class:`medxfer.MedxferError`) are printed as one message without a
    traceback and exit with their code (2 for bad config, data or plugins, and for an
    output that cannot be written). Ctrl-C prints "interrupted" (with how to continue an
    interrupted run) and exits with 130; SIGTERM does the same, says "terminated" and
    exits with 143. In a torchrun worker every error is also written to torchrun's error
    file, messages name the rank, and a rank that only lost its connection to a failed
    peer says so in one line.
    """
    previous = _stop_on_sigterm()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", MedxferWarning)
            # pydicom warns of every odd value in a damaged file, quoting it; what matters
            # reaches the user as an error naming the file
            warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")
            warnings.showwarning = _shown_as_lines(warnings.showwarning)
            return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; returns the handler it
    replaced (``None`` where it installs none).

    A torchrun worker keeps the default: its agent stops the other workers with SIGTERM
    once one has failed, and tells the cause from a worker killed by the signal.
    """
    if threading.current_thread() is not threading.main_thread() or _in_torchrun_worker():
        return None

    def terminate(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


def _in_torchrun_worker() -> bool:
    return bool(os.environ.get("TORCHELASTIC_ERROR_FILE"))


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
        _report_failures(command)
        tidy_flags(command)
        result = command.main(args=argv, prog_name="medxfer", standalone_mode=False)
    except (_Interrupted, KeyboardInterrupt) as exc:
        error(_worker_prefix() + _interrupted_message(exc))
        return 128 + signal.SIGTERM if _terminated(exc) else 130
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
