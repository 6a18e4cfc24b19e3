"""``mlflow``: a run in an MLflow tracking server or store (``pip install "medxfer[mlflow]"``).

One MLflow run per medxfer run (a deep ensemble's members are runs of their own), in the
experiment ``experiment`` of ``tracking_uri`` (``MLFLOW_TRACKING_URI`` or MLflow's
default when not given), holding:

* parameters: the resolved config by dotted key (``train.optimizer.lr``,
  ``model.backbone.name``), from :func:`medxfer.hyperparameters`;
* metrics: every epoch's numbers at step = the epoch, counted from 1 (``train/loss``,
  ``val/auc``, ``lr`` and what plugins added), then the kept model's results
  (``test/auc``, ``test/dice_<class>``, ``test/recall_<class>``, ``final_val/auc``);
* tags: the run folder, task, backbone, strategy and the kept epoch; with ``artifacts``,
  ``metrics.json``, the report, ``config.yaml`` and ``figures/``.

A run resumed with ``medxfer run --resume`` continues its MLflow run (the id is kept in
the checkpoint). The store is opened when training starts, so a wrong ``tracking_uri``
stops the run before its first epoch; a store that fails later only warns, and the
training goes on.
"""

from __future__ import annotations

import importlib.util
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import medxfer
from medxfer.api import ConfigError, MedxferWarning

if TYPE_CHECKING:  # pragma: no cover
    from medxfer import FitContext

#: What ``medxfer run`` installs the logger's dependency with.
INSTALL_HINT = 'pip install "medxfer[mlflow]"'
#: Parameters per request: MLflow's servers take at most 100 in one batch.
PARAMS_PER_BATCH = 100
#: Results files the run folder holds, logged as artifacts with ``artifacts: true``.
ARTIFACT_FILES = ("metrics.json", "report.md", "report.html", "config.yaml")


class MLflowLogger:
    """Logs one medxfer run as one MLflow run (see the module docstring)."""

    def __init__(self, tracking_uri: str | None, experiment: str, run_name: str | None,
                 artifacts: bool) -> None:
        self.tracking_uri, self.experiment = tracking_uri, experiment
        self.run_name, self.artifacts = run_name, artifacts
        self.client: Any = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self._warned = False

    # -- hooks -------------------------------------------------------------------------

    @medxfer.hookimpl
    def medxfer_fit_start(self, ctx: FitContext) -> None:
        """Open the store and the experiment: a wrong address stops the run here."""
        self._connect()

    @medxfer.hookimpl
    def medxfer_log_metrics(self, ctx: FitContext, epoch: int, metrics: dict[str, Any]) -> None:
        """The epoch's numbers at step ``epoch``."""
        scalars = medxfer.epoch_scalars(metrics, ctx.config.task)
        self._guarded("log the epoch's metrics",
                      lambda: self._log_metrics(self._run(ctx), scalars, epoch))

    @medxfer.hookimpl
    def medxfer_log_summary(self, ctx: FitContext, summary: dict[str, Any]) -> None:
        """The final results, tags and artifacts; the MLflow run is marked finished."""
        def finish() -> None:
            run_id = self._run(ctx)
            step = len(summary.get("history") or []) or 1
            self._log_metrics(run_id, medxfer.summary_metrics(summary), step)
            for key in ("best_epoch", "epochs_run", "monitor"):
                if summary.get(key) is not None:
                    self.client.set_tag(run_id, f"medxfer.{key}", str(summary[key]))
            if self.artifacts:
                self._log_artifacts(run_id, Path(ctx.run_dir))
            self.client.set_terminated(run_id, "FINISHED")

        self._guarded("record the run's results", finish)

    @medxfer.hookimpl
    def medxfer_on_exception(self, ctx: FitContext, exception: BaseException) -> None:
        """Mark the MLflow run killed (Ctrl-C: ``--resume`` continues it) or failed."""
        if self.run_id is None:
            return
        status = "KILLED" if isinstance(exception, KeyboardInterrupt) else "FAILED"
        self._guarded("mark the run as ended",
                      lambda: self.client.set_terminated(self.run_id, status))

    # -- MLflow ------------------------------------------------------------------------

    def _connect(self) -> None:
        if self.client is not None:
            return
        from mlflow import MlflowClient

        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            found = self.client.get_experiment_by_name(self.experiment)
            self.experiment_id = (found.experiment_id if found is not None
                                  else self.client.create_experiment(self.experiment))
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; name the store
            self.client = None
            where = self.tracking_uri or "MLflow's default (MLFLOW_TRACKING_URI)"
            raise ConfigError(
                f"tracking: mlflow could not open the tracking store {where} with experiment "
                f"{self.experiment!r}: {type(exc).__name__}: {_first_line(exc)}. Check "
                "tracking_uri (e.g. http://host:5000, or a file: folder with "
                "MLFLOW_ALLOW_FILE_STORE=true), or remove mlflow from tracking") from None

    def _run(self, ctx: FitContext) -> str:
        """This medxfer run's MLflow run: continued on resume, else created (with the
        parameters). Its id is kept in ``ctx.state`` and so in the checkpoint."""
        if self.run_id is not None:
            return self.run_id
        self._connect()
        key = f"mlflow_run_id:{self.experiment}@{self.tracking_uri or ''}"
        resumed = ctx.state.get(key)
        if isinstance(resumed, str) and resumed:
            self.client.update_run(resumed, status="RUNNING")
            self.run_id = resumed
            return resumed
        run_dir = Path(ctx.run_dir).resolve()
        config = ctx.config
        tags = {"medxfer.run_dir": str(run_dir), "medxfer.task": config.task,
                "medxfer.backbone": config.model.backbone.name,
                "medxfer.strategy": config.strategy.name}
        run = self.client.create_run(self.experiment_id, run_name=self.run_name or run_dir.name,
                                     tags=tags)
        self.run_id = ctx.state[key] = run.info.run_id
        from mlflow.entities import Param

        params = [Param(name, str(value))
                  for name, value in medxfer.hyperparameters(config).items()]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[start:start + PARAMS_PER_BATCH])
        return self.run_id

    def _log_metrics(self, run_id: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(_metric_key(tag), value, stamp, int(step))
                   for tag, value in values.items()]
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])

    def _log_artifacts(self, run_id: str, run_dir: Path) -> None:
        for name in ARTIFACT_FILES:
            if (run_dir / name).is_file():
                self.client.log_artifact(run_id, str(run_dir / name))
        if (run_dir / "figures").is_dir():
            self.client.log_artifacts(run_id, str(run_dir / "figures"), "figures")

    def _guarded(self, what: str, action: Any) -> None:
        """Run ``action``; a failing store warns (once) instead of stopping the training."""
        try:
            action()
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - tracking must not cost a run
            if not self._warned:
                self._warned = True
                warnings.warn(f"tracking: mlflow could not {what} ({type(exc).__name__}: "
                              f"{_first_line(exc)}); training goes on, the run's own files "
                              "are complete", MedxferWarning, stacklevel=2)


def _metric_key(tag: str) -> str:
    """A tag as MLflow accepts it (letters, digits, ``_-. /``)."""
    return re.sub(r"[^0-9A-Za-z_\-. /]", "_", tag)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def mlflow(tracking_uri: str | None = None, experiment: str = "medxfer",
           run_name: str | None = None, artifacts: bool = True) -> MLflowLogger:
    """Log the run to MLflow: parameters, per-epoch and final metrics, artifacts.

    Args:
        tracking_uri: The tracking server or store (``http://host:5000``,
            ``databricks``, ``sqlite:///mlflow.db``); ``MLFLOW_TRACKING_URI`` or MLflow's
            default when not given.
        experiment: The experiment's name (created when missing).
        run_name: The MLflow run's name (default: the run folder's name).
        artifacts: Also store ``metrics.json``, the report, ``config.yaml`` and the figures.

    Raises:
        ConfigError: when MLflow is not installed, or for an option of the wrong type.
    """
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(f"tracking: logger 'mlflow' needs MLflow, which is not installed: "
                          f"{INSTALL_HINT} (or mlflow-skinny), or remove mlflow from tracking")
    for key, value in (("tracking_uri", tracking_uri), ("run_name", run_name)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"tracking: mlflow {key} must be text, got {value!r}")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"tracking: mlflow experiment must be a name, got {experiment!r}")
    if not isinstance(artifacts, bool):
        raise ConfigError(f"tracking: mlflow artifacts must be true or false, got {artifacts!r}")
    return MLflowLogger(tracking_uri, experiment.strip(), run_name, artifacts)


@medxfer.hookimpl
def medxfer_register_loggers(register):
    """Register ``mlflow``."""
    # (no brackets: `medxfer plugins` prints descriptions as rich text)
    register("mlflow", mlflow, description="MLflow tracking: parameters, metrics, artifacts "
             "(needs the mlflow extra of medxfer)")
