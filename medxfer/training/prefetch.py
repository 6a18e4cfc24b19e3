"""A training loader that prepares the next batches in a background thread.

It is MONAI's :class:`~monai.data.ThreadDataLoader` with one fix that matters for a
trainer: MONAI's buffer thread dies silently when reading or augmenting an item fails,
and the epoch then just ends early. Here the failure travels through the buffer and is
raised in the training thread, with its original message.
"""

from __future__ import annotations

from typing import Any, Iterator

from monai.data import ThreadDataLoader
from monai.data.thread_buffer import buffer_iterator
from torch.utils.data import DataLoader


class _Failure:
    """An exception raised while producing a batch, carried to the consumer."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _carry_failures(batches: Iterator[Any]) -> Iterator[Any]:
    try:
        yield from batches
    except Exception as exc:  # noqa: BLE001 - re-raised in the training thread
        yield _Failure(exc)


class PrefetchLoader(ThreadDataLoader):
    """MONAI's thread loader whose data errors reach the training loop.

    Args:
        dataset: The training dataset.
        buffer_size: Batches prepared ahead.
        **kwargs: :class:`torch.utils.data.DataLoader` arguments.
    """

    def __init__(self, dataset: Any, buffer_size: int = 2, **kwargs: Any) -> None:
        super().__init__(dataset, buffer_size=buffer_size, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        source = _carry_failures(DataLoader.__iter__(self))
        for batch in buffer_iterator(source, self.buffer_size, self.buffer_timeout,
                                     self.repeats):
            if isinstance(batch, _Failure):
                raise batch.exc
            yield batch
