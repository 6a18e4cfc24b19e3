"""``tensorboard``: epochs at steps counted from 1, results per class, the config as
hyper-parameters; read back with TensorBoard's own event reader."""

from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from medxfer_plugins.loggers.tensorboard import tensorboard
from tests.plugins.loggers.conftest import classification_summary, epoch_metrics


def events(run_dir):
    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag):
    return [(e.step, pytest.approx(e.value)) for e in accumulator.Scalars(tag)]


def test_epochs_results_per_class_and_hyperparameters(fit_context):
    ctx = fit_context(task="classification", strategy={"name": "l2sp", "alpha": 0.01})
    logger = tensorboard()
    for epoch in (1, 2):
        logger.medxfer_log_metrics(ctx=ctx, epoch=epoch, metrics=epoch_metrics(epoch))
    logger.medxfer_log_summary(ctx=ctx, summary=classification_summary())
    found = events(ctx.run_dir)
    tags = set(found.Tags()["scalars"])
    assert {"train/loss", "train/L_new", "val/loss", "val/auc", "val/accuracy", "lr",
            "plugin/metric"} <= tags
    assert "epoch" not in tags
    assert scalars(found, "val/auc") == [(1, 0.7), (2, 0.8)]  # steps are epochs from 1
    assert scalars(found, "plugin/metric") == [(1, 8.0), (2, 9.0)]
    # the selected model's results, at the last epoch's step
    assert scalars(found, "test/auc") == [(2, 0.75)]
    assert scalars(found, "final_val/auc") == [(2, 0.8)]  # the kept model on validation
    assert scalars(found, "test/recall_normal") == [(2, 10 / 15)]
    assert scalars(found, "test/recall_pneumonia") == [(2, 11 / 15)]
    # the HParams dashboard: the resolved config, beside the test metrics
    content = found.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = HParamsPluginData.FromString(content[hparams_metadata.SESSION_START_INFO_TAG])
    hparams = start.session_start_info.hparams
    assert hparams["strategy.name"].string_value == "l2sp"
    assert hparams["strategy.alpha"].number_value == pytest.approx(0.01)
    assert hparams["train.optimizer.lr"].number_value == pytest.approx(1e-3)
    experiment = HParamsPluginData.FromString(content[hparams_metadata.EXPERIMENT_TAG])
    metric_tags = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"test/auc", "test/recall_pneumonia", "final_val/auc"} <= metric_tags


def test_segmentation_results_have_the_dice_of_each_class(fit_context):
    ctx = fit_context(task="segmentation", model={"backbone": {"name": "unet"}})
    logger = tensorboard()
    logger.medxfer_log_metrics(ctx=ctx, epoch=1, metrics={"epoch": 1, "train_loss": 0.9,
                                                          "val_dice": 0.5})
    logger.medxfer_log_summary(ctx=ctx, summary={
        "task": "segmentation", "test": {"dice": 0.7, "dice_anterior": 0.72,
                                         "dice_posterior": 0.68, "hd95": 3.0}})
    found = events(ctx.run_dir)
    assert scalars(found, "val/dice") == [(1, 0.5)]
    assert scalars(found, "test/dice_anterior") == [(1, 0.72)]
    assert scalars(found, "test/dice_posterior") == [(1, 0.68)]


def test_a_failed_run_keeps_what_was_written(fit_context):
    ctx = fit_context(task="classification")
    logger = tensorboard()
    logger.medxfer_log_metrics(ctx=ctx, epoch=1, metrics=epoch_metrics(1))
    logger.medxfer_on_exception(ctx=ctx, exception=KeyboardInterrupt())
    assert scalars(events(ctx.run_dir), "train/loss") == [(1, 1.0)]
