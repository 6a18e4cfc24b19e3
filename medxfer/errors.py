"""Errors a user can cause, each with the exit code the CLI uses for it."""

from __future__ import annotations


class MedxferError(Exception):
    """Base class of errors with a message meant for the user.

    The message names the file, config key or plugin involved and says what to do.
    """

    exit_code = 1


class ConfigError(MedxferError, ValueError):
    """The run config (or a ``--set`` override) is invalid; exit code 2."""

    exit_code = 2


class PluginError(MedxferError):
    """A plugin is broken, misspelt a hook, or registered a name twice; exit code 2."""

    exit_code = 2


class DataError(MedxferError, ValueError):
    """An input file, folder or manifest is missing, unreadable or inconsistent; exit code 2."""

    exit_code = 2


class CheckpointError(MedxferError):
    """A checkpoint is missing, corrupt or does not match the model; exit code 2."""

    exit_code = 2


class WeightsError(MedxferError):
    """Pretrained weights are missing, fail their hash check or do not fit; exit code 2."""

    exit_code = 2


class TrainingError(MedxferError):
    """Training cannot go on: the loss is no longer finite (it diverged); exit code 2."""

    exit_code = 2
