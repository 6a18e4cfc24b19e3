"""``tensorboard``: a run's curves, hyper-parameters and results as TensorBoard event files.

Written to the run folder's ``tensorboard/`` (``tensorboard --logdir runs/`` compares runs):

* every epoch's numbers at step = the epoch (counted from 1): ``train/loss``,
  ``train/L_new``, the loss terms, ``val/<metric>``, ``lr`` and whatever a plugin added in
  ``medxfer_epoch_end``;
* after the final evaluation, at the last epoch's step: ``test/<metric>`` and
  ``final_val/<metric>`` of the kept model, per class too (``test/dice_<class>``,
  ``test/recall_<class>``), and the resolved config in the HParams dashboard with those
  results beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import medxfer

if TYPE_CHECKING:  # pragma: no cover
    from medxfer import FitContext

#: The folder of the event files inside the run folder.
LOG_FOLDER = "tensorboard"


class TensorBoardLogger:
    """Writes a run's scalars and hyper-parameters under ``<run>/tensorboard``."""

    def __init__(self) -> None:
        self._writer: Any = None
        self._last_step = 0

    def _writer_for(self, ctx: FitContext) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # torch: on first use

            self._writer = SummaryWriter(str(Path(ctx.run_dir) / LOG_FOLDER))
        return self._writer

    @medxfer.hookimpl
    def medxfer_log_metrics(self, ctx: FitContext, epoch: int, metrics: dict[str, Any]) -> None:
        """The epoch's numbers as scalars at step ``epoch``."""
        writer = self._writer_for(ctx)
        for tag, value in medxfer.epoch_scalars(metrics, ctx.config.task).items():
            writer.add_scalar(tag, value, epoch)
        self._last_step = epoch
        writer.flush()

    @medxfer.hookimpl
    def medxfer_log_summary(self, ctx: FitContext, summary: dict[str, Any]) -> None:
        """The final results as scalars and, with the config, in the HParams dashboard."""
        from torch.utils.tensorboard.summary import hparams

        writer = self._writer_for(ctx)
        step = self._last_step or len(summary.get("history") or []) or 1
        results = medxfer.summary_metrics(summary)
        for tag, value in results.items():
            writer.add_scalar(tag, value, step)
        if results:  # the HParams dashboard shows a run only beside its metrics
            # Into this run's own event file: add_hparams would start a sub-run.
            for proto in hparams(medxfer.hyperparameters(ctx.config), results):
                writer.file_writer.add_summary(proto)
        self._close()

    @medxfer.hookimpl
    def medxfer_on_exception(self, ctx: FitContext, exception: BaseException) -> None:
        """Close the event file (what was written stays readable)."""
        self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def tensorboard() -> TensorBoardLogger:
    """TensorBoard event files in the run folder's ``tensorboard/`` (on by default)."""
    return TensorBoardLogger()


@medxfer.hookimpl
def medxfer_register_loggers(register):
    """Register ``tensorboard``."""
    register("tensorboard", tensorboard,
             description="TensorBoard event files in the run's tensorboard/ folder")
