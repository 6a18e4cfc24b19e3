"""Contract test, parametrised over every registered logger: it builds with its default
options, is a valid lifecycle plugin, takes a run from start to summary (and a failed one)
through the run's plugin manager, and its options are checked like every plugin's."""

from __future__ import annotations

import warnings

import pytest

from medxfer.config import RunConfig
from medxfer.errors import ConfigError
from medxfer.plugins import (PluginLoadWarning, build_registries, check_plugin_specs,
                             create_plugin_manager)
from tests.plugins.loggers.conftest import classification_summary, epoch_metrics

BUILT_IN = {"tensorboard", "mlflow"}


def _registries():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)  # other kinds may be unfinished
        return build_registries(create_plugin_manager())


REGISTRIES = _registries()
ENTRIES = REGISTRIES.logger.entries()


@pytest.fixture(params=ENTRIES, ids=[e.name for e in ENTRIES])
def entry(request):
    return request.param


def build(entry):
    """The logger with its default options; skipped when an optional package is missing
    (the factory must then say how to install it)."""
    try:
        return entry.factory()
    except ConfigError as exc:
        assert "pip install" in str(exc), f"logger {entry.name!r}: {exc}"
        pytest.skip(f"logger {entry.name!r} is not usable here: {exc}")


def run_manager(logger):
    manager = create_plugin_manager(load_entry_points=False)
    manager.register(logger, name="logger:under-test:0")
    return manager.hook


def test_built_in_loggers_are_registered_with_a_description():
    assert BUILT_IN <= {e.name for e in ENTRIES}
    assert all(e.description for e in ENTRIES)


def test_the_default_config_logs_to_tensorboard():
    assert [spec.name for spec in RunConfig().tracking] == ["tensorboard"]


def test_logger_is_a_lifecycle_plugin_with_the_logging_hooks(entry):
    hook = run_manager(build(entry))
    for name in ("medxfer_log_metrics", "medxfer_log_summary", "medxfer_on_exception"):
        assert getattr(hook, name).get_hookimpls(), f"{entry.name} lacks {name}"


def test_logger_records_a_run_from_start_to_summary(entry, fit_context):
    ctx = fit_context(task="classification")
    hook = run_manager(build(entry))
    hook.medxfer_fit_start(ctx=ctx)
    for epoch in (1, 2):
        hook.medxfer_log_metrics(ctx=ctx, epoch=epoch, metrics=epoch_metrics(epoch))
    hook.medxfer_fit_end(ctx=ctx)
    hook.medxfer_log_summary(ctx=ctx, summary=classification_summary())
    assert all(isinstance(v, (int, float, str, bool)) for k, v in ctx.state.items()
               if not k.startswith("_")), "ctx.state must stay checkpointable"


def test_logger_ends_a_failed_run_without_raising(entry, fit_context):
    ctx = fit_context(task="classification")
    hook = run_manager(build(entry))
    hook.medxfer_fit_start(ctx=ctx)
    hook.medxfer_log_metrics(ctx=ctx, epoch=1, metrics=epoch_metrics(1))
    hook.medxfer_on_exception(ctx=ctx, exception=RuntimeError("out of memory"))


def test_logger_options_are_checked_against_its_factory(entry):
    config = RunConfig.model_validate({"tracking": [{"name": "tensorboard"},
                                                    {"name": entry.name, "no_such_option": 1}]})
    with pytest.raises(ConfigError, match=rf"tracking\[1\]\.no_such_option: logger "
                                          rf"'{entry.name}' takes no option"):
        check_plugin_specs(config.plugin_specs(), REGISTRIES)


def test_an_unknown_logger_is_refused_with_the_choices():
    config = RunConfig.model_validate({"tracking": [{"name": "mlfow"}]})
    with pytest.raises(ConfigError, match=r"tracking\[0\]\.name: unknown logger 'mlfow'\. "
                                          r"Did you mean 'mlflow'\?"):
        check_plugin_specs(config.plugin_specs(), REGISTRIES)
