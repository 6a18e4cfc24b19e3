"""``mlflow`` on real short runs, against a local file store: parameters, every epoch's
metrics (a plugin's included) at steps counted from 1, the results per class, artifacts,
and a killed run that resumes into the same MLflow run."""

from __future__ import annotations

import warnings

import pytest

import medxfer
from medxfer.config import load_config
from medxfer.errors import ConfigError
from medxfer.plugins import PluginLoadWarning, build_registries, create_plugin_manager
from medxfer.workflows.run import run_pipeline

mlflow = pytest.importorskip("mlflow", reason='MLflow is not installed: pip install '
                                              '"medxfer[mlflow]"')
from mlflow import MlflowClient  # noqa: E402

QUICK = ["train.epochs=3", "eval.bootstrap=20", "train.batch_size=8", "data.limit=16",
         "model.backbone.name=basic_cnn", "model.backbone.pretrained=none",
         "strategy.name=counting"]
#: Epochs of the first attempt before Ctrl-C (None: never interrupted).
KILL_AT: dict[str, int | None] = {"epoch": None}


class CountingStrategy(medxfer.Strategy):
    """Full fine-tuning that adds a metric of its own each epoch (and can be interrupted)."""

    name = "counting"

    @medxfer.hookimpl
    def medxfer_epoch_start(self, ctx, epoch):
        if KILL_AT["epoch"] == epoch:
            KILL_AT["epoch"] = None
            raise KeyboardInterrupt

    @medxfer.hookimpl(trylast=True)  # runs after any logger's epoch_end would
    def medxfer_epoch_end(self, ctx, epoch, metrics):
        metrics["trainable_tensors"] = float(sum(p.requires_grad
                                                 for p in ctx.model.parameters()))


class TestPlugins:
    @medxfer.hookimpl
    def medxfer_register_strategies(self, register):
        register("counting", lambda: CountingStrategy())


@pytest.fixture(scope="module")
def registries():
    manager = create_plugin_manager()
    manager.register(TestPlugins(), name="test_plugins")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginLoadWarning)
        return build_registries(manager)


def tracked(store: str, *extra: str):
    return load_config(None, [*QUICK, *extra, "tracking=[{name: tensorboard}, {name: mlflow, "
                              f"tracking_uri: '{store}', experiment: medxfer-test}}]"])


def only_run(store: str):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("medxfer-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def steps(client, run, key):
    return [(m.step, m.value) for m in
            sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


@pytest.mark.slow
def test_a_run_is_tracked_in_mlflow(tmp_path, registries, local_mlflow_store):
    store = local_mlflow_store
    summary = run_pipeline(tracked(store), tmp_path / "run", registries=registries,
                           progress=False)
    client, run = only_run(store)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["model.backbone.name"] == "basic_cnn"
    assert params["train.epochs"] == "3" and params["strategy.name"] == "counting"
    assert not any(key.startswith("tracking") for key in params)
    tags = run.data.tags
    assert tags["medxfer.run_dir"] == str((tmp_path / "run").resolve())
    assert tags["medxfer.best_epoch"] == str(summary["best_epoch"])
    # every epoch's metrics at steps 1..3, as the history counts them
    history = summary["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert steps(client, run, "train/loss") == [(h["epoch"], pytest.approx(h["train_loss"]))
                                               for h in history]
    assert [s for s, _ in steps(client, run, "val/auc")] == [1, 2, 3]
    # a plugin's metric, added in epoch_end after the loggers' turn, reaches both loggers
    assert [s for s, _ in steps(client, run, "trainable/tensors")] == [1, 2, 3]
    from tests.plugins.loggers.test_tensorboard import events, scalars

    assert [s for s, _ in scalars(events(tmp_path / "run"), "trainable/tensors")] == [1, 2, 3]
    # the kept model's results, per class too
    final = run.data.metrics
    assert final["test/auc"] == pytest.approx(summary["test"]["auc"])
    for index, name in enumerate(summary["class_names"]):
        row = summary["confusion_matrix"][index]
        assert final[f"test/recall_{name}"] == pytest.approx(row[index] / sum(row))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "report.md", "config.yaml", "figures"} <= artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/training_curves.png" in figures and "figures/roc_curve.png" in figures


@pytest.mark.slow
def test_a_killed_run_resumes_into_the_same_mlflow_run(tmp_path, registries,
                                                       local_mlflow_store):
    store = local_mlflow_store
    KILL_AT["epoch"] = 2  # Ctrl-C at the start of the third epoch
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(tracked(store), tmp_path / "run", registries=registries, progress=False)
    client, run = only_run(store)
    assert run.info.status == "KILLED"
    run_pipeline(tracked(store), tmp_path / "run", registries=registries, resume=True,
                 progress=False)
    client, run = only_run(store)
    assert run.info.status == "FINISHED"
    assert [s for s, _ in steps(client, run, "train/loss")] == [1, 2, 3]


def test_a_store_that_cannot_be_opened_stops_the_run_before_training(fit_context):
    from medxfer_plugins.loggers.mlflow import mlflow as mlflow_logger

    ctx = fit_context(task="classification")
    logger = mlflow_logger(tracking_uri="unknown-scheme://nowhere", experiment="x")
    with pytest.raises(ConfigError, match="tracking: mlflow could not open the tracking store "
                                          "unknown-scheme://nowhere"):
        logger.medxfer_fit_start(ctx=ctx)


def test_a_store_failing_during_training_warns_once_and_training_goes_on(fit_context):
    from medxfer_plugins.loggers.mlflow import mlflow as mlflow_logger

    ctx = fit_context(task="classification")
    logger = mlflow_logger(experiment="x")
    logger.medxfer_fit_start(ctx=ctx)
    logger.client.log_batch = _fails  # the server goes away
    with pytest.warns(medxfer.MedxferWarning, match="training goes on") as caught:
        logger.medxfer_log_metrics(ctx=ctx, epoch=1, metrics={"epoch": 1, "train_loss": 1.0})
        logger.medxfer_log_metrics(ctx=ctx, epoch=2, metrics={"epoch": 2, "train_loss": 0.5})
    assert len(caught) == 1


def _fails(*args, **kwargs):
    raise ConnectionError("connection refused")


def test_options_of_the_wrong_type_are_refused():
    from medxfer_plugins.loggers.mlflow import mlflow as mlflow_logger

    with pytest.raises(ConfigError, match="tracking: mlflow experiment must be a name"):
        mlflow_logger(experiment="")
    with pytest.raises(ConfigError, match="artifacts must be true or false"):
        mlflow_logger(artifacts="yes")
