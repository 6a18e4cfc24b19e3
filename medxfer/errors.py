"""Errors a user can cause, each with the exit code the CLI uses for it."""

from __future__ import annotations

import warnings


class MedxferError(Exception):
    """Base class of errors with a message meant for the user.

    The message names the file, config key or plugin involved and says what to do.
    """

    exit_code = 1


class ConfigError(MedxferError, ValueError):
    """The run config (or a ``--set`` override) is invalid; exit code 2."""

    exit_code = 2


class _Hinted:
    """A problem, and a hint of what to do that the caller may replace with its own (the
    code that finds the problem does not always know what the user can change)."""

    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(f"{problem}: {hint}" if hint else problem)  # type: ignore[call-arg]
        self.problem = problem
        self.hint = hint

    def with_hint(self, hint: str) -> "_Hinted":
        """The same error and problem with ``hint`` in place of this error's."""
        return type(self)(self.problem, hint)


class InputSizeError(_Hinted, ConfigError):
    """A network cannot take an input of this spatial size; exit code 2.

    ``problem`` says what the network takes and what it got, ``hint`` what to change. The
    network knows the first; what sets the size (a training patch, a sliding window, the
    image) depends on the caller, which may re-raise the error :meth:`with_hint` its own.
    """


class PluginError(MedxferError):
    """A plugin is broken, misspelt a hook, or registered a name twice; exit code 2."""

    exit_code = 2


class DataError(MedxferError, ValueError):
    """An input file, folder or manifest is missing, unreadable or inconsistent; exit code 2."""

    exit_code = 2


class SeriesChoiceError(_Hinted, DataError):
    """A DICOM folder holds several series and nothing says which to read; exit code 2.

    ``problem`` names the folder and lists its series, ``hint`` says how to pick one. How
    depends on the caller (a manifest's ``series_uid`` column, a folder of one series for
    ``medxfer predict``), which may re-raise the error :meth:`with_hint` its own.
    """


class CheckpointError(MedxferError):
    """A checkpoint is missing, corrupt or does not match the model; exit code 2."""

    exit_code = 2


class WeightsError(MedxferError):
    """Pretrained weights are missing, fail their hash check or do not fit; exit code 2."""

    exit_code = 2


class OutputError(MedxferError):
    """An output cannot be written: its disk is full or read-only, or permission is
    denied; exit code 2. The message names the file or folder and what to do."""

    exit_code = 2


class TrainingError(MedxferError):
    """Training cannot go on: the loss is no longer finite (it diverged); exit code 2."""

    exit_code = 2


class MedxferWarning(UserWarning):
    """Something a user should know that does not stop the command (a guess about the
    data, weights that are random, a folder reused). The CLI prints these as one line."""


def notify(message: str) -> None:
    """Tell the user ``message`` (a :class:`MedxferWarning`; the CLI prints it as a warning
    line, a notebook shows it as a Python warning)."""
    warnings.warn(message, MedxferWarning, stacklevel=2)


def unwrap_errors(exc: BaseException) -> BaseException:
    """The user error (:class:`MedxferError`) MONAI wrapped in its ``RuntimeError``, if any."""
    seen = exc
    while seen is not None:
        if isinstance(seen, MedxferError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc
