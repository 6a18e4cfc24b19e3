"""TensorBoard logging, as a lifecycle-hook plugin of the run."""

from __future__ import annotations

from pathlib import Path

from medxfer.training.context import FitContext
from medxfer.hookspecs import hookimpl
from medxfer.metric_table import metrics_for


def scalar_tag(key: str, task: str) -> str:
    """The TensorBoard tag of an epoch's metric: ``val_<name>`` of a validation metric of
    ``task`` in the metric table is ``val/<name>`` (``val/balanced_accuracy``); any other
    key is grouped by its first word, ``train_loss`` as ``train/loss``, ``lr`` as ``lr``."""
    name = key.removeprefix("val_")
    if name != key and name in metrics_for(task, validation=True):
        return f"val/{name}"
    return key.replace("_", "/", 1)


class TensorBoardLogger:
    """Writes every epoch's numeric metrics as TensorBoard scalars under ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer = None

    def _get_writer(self):  # noqa: ANN202 - tensorboard is imported lazily
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        return self._writer

    @hookimpl
    def medxfer_epoch_end(self, ctx: FitContext, epoch: int, metrics: dict[str, float]) -> None:
        """Log the epoch's metrics (tags as :func:`scalar_tag` names them)."""
        writer = self._get_writer()
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and key != "epoch":
                writer.add_scalar(scalar_tag(key, ctx.config.task), value, epoch)
        writer.flush()

    @hookimpl
    def medxfer_fit_end(self, ctx: FitContext) -> None:
        """Close the event file."""
        self._close()

    @hookimpl
    def medxfer_on_exception(self, ctx: FitContext, exception: BaseException) -> None:
        """Close the event file."""
        self._close()

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
