"""The :class:`Task` interface: everything the core does differently per task.

A task says what a label is (a class, a value or a mask), builds the network for it, gives
the training loss and the per-epoch validation, evaluates and reports the selected model,
predicts new files, combines ensemble members and describes an exported model's output.
The training loop, the workflows, the data code and the export ask the run's task object
(:func:`medxfer.tasks.task_of`) instead of comparing task names, so adding a task (multi-
label, detection) means adding one module here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Sequence

if TYPE_CHECKING:  # pragma: no cover - annotations only
    import torch

    from medxfer.config import RunConfig
    from medxfer.plugins import Registries
    from medxfer.training.amp import Precision
    from medxfer.training.trainer import FitResult

#: What one label of a task is: a class index per image, a number per image, or a label map
#: on the image's grid.
LabelKind = Literal["class", "value", "mask"]


@dataclass
class PredictionOutput:
    """What :meth:`Task.predict_files` produced, for the caller to show: text for standard
    output (e.g. a CSV when no file was asked for) and messages about what was written."""

    stdout: str = ""
    messages: list[str] = field(default_factory=list)


class Task(ABC):
    """One kind of prediction medxfer trains: its labels, network, loss, evaluation, outputs.

    Subclasses set the class attributes and implement the abstract methods; one instance
    per task is shared (:func:`medxfer.tasks.get_task`), so a task holds no run state.
    """

    #: The name a config gives (``task: ...``).
    name: ClassVar[str]
    #: What a label is (see :data:`LabelKind`).
    label_kind: ClassVar[LabelKind]
    #: Whether ``eval.tta: flip`` (averaging the outputs of flipped images) applies.
    supports_tta: ClassVar[bool] = False
    #: Whether ``medxfer ensemble`` can combine finished runs of this task.
    supports_run_ensembles: ClassVar[bool] = False
    #: Whether ``ensemble.members > 1`` (a deep ensemble trained by one run) applies.
    supports_deep_ensembles: ClassVar[bool] = False

    # -- labels --------------------------------------------------------------------------

    @property
    def labels_are_classes(self) -> bool:
        """Each image has one class label (an index into the class names)."""
        return self.label_kind == "class"

    @property
    def labels_are_values(self) -> bool:
        """Each image has one number to predict."""
        return self.label_kind == "value"

    @property
    def labels_are_masks(self) -> bool:
        """Each image has a label map on its own grid (transforms move image and mask alike)."""
        return self.label_kind == "mask"

    @property
    def has_classes(self) -> bool:
        """Labels name classes (class labels or the values of a label map)."""
        return self.label_kind != "value"

    def output_channels(self, class_names: Sequence[str]) -> int:
        """Network outputs per image (per voxel for masks): one per class, or one value."""
        return 1 if self.labels_are_values else len(class_names)

    # -- network and training ------------------------------------------------------------

    @abstractmethod
    def build_network(self, config: RunConfig, registries: Registries, bundle: Any,
                      backbone_kwargs: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
        """The network for this task and the backbone (or encoder view) strategies act on.

        Raises:
            ConfigError: when the configured backbone does not fit the task.
        """

    @abstractmethod
    def loss(self, config: RunConfig, train_labels: list[int], num_classes: int,
             device: torch.device) -> torch.nn.Module:
        """The task loss ``L_new(outputs, labels)`` of the combined loss."""

    def collate(self) -> Callable[[list[Any]], Any] | None:
        """The loaders' collate function (``None``: PyTorch's default)."""
        return None

    @abstractmethod
    def validator(self, config: RunConfig, bundle: Any, val_loader: Any, device: torch.device,
                  precision: Precision, loss_fn: Any) -> Callable[[torch.nn.Module],
                                                                  dict[str, float]]:
        """The per-epoch validation: ``net -> {"val_loss": ..., "val_<metric>": ...}``."""

    def check_evaluation_input(self, config: RunConfig, network: torch.nn.Module,
                               channels: int, input_size: list[int],
                               forward: Callable[[torch.nn.Module, int, list[int]], None]
                               ) -> None:
        """Check, before training, that ``network`` takes what evaluation will give it
        beyond the training input (e.g. a segmentation's sliding windows), by calling
        ``forward(network, channels, size)`` (which raises the network's size errors).

        Raises:
            InputSizeError: naming the config key that sets the size.
        """

    # -- evaluation ----------------------------------------------------------------------

    @abstractmethod
    def evaluate_and_report(self, config: RunConfig, run_dir: Path, model: torch.nn.Module,
                            bundle: Any, result: FitResult, run_info: dict[str, Any], *,
                            val_loader: Any, test_loader: Any, device: torch.device,
                            precision: Precision, loss_fn: Any,
                            target: Any = None) -> dict[str, Any]:
        """Evaluate the selected model on validation and test, write every output file of
        the run (``metrics.json``, predictions, figures, report) and return the summary."""

    # -- prediction on new files ---------------------------------------------------------

    @abstractmethod
    def predict_files(self, loaded: Any, inputs: Sequence[Path], output: str | None, *,
                      dicom_seg: bool = False) -> PredictionOutput:
        """Apply a finished run's model (``loaded``, from
        :func:`medxfer.workflows.predict.load_run`) to new image files, writing into
        ``output`` (``--output`` as given; its meaning is the task's).

        Raises:
            ConfigError: when ``output`` or ``dicom_seg`` does not fit the task.
        """

    # -- export --------------------------------------------------------------------------

    @abstractmethod
    def describe_output(self, loaded: Any) -> dict[str, Any]:
        """What an exported model's output means (``export.json``'s ``output``)."""

    def decision(self, loaded: Any) -> dict[str, Any] | None:
        """The decision rule ``medxfer predict`` applies to the output, if any."""
        return None

    # -- ensembles of finished runs -----------------------------------------------------

    def evaluate_run_ensemble(self, members: Sequence[Any], combiner: Any, info: dict[str, Any],
                              staging: Path, device: torch.device) -> dict[str, Any]:
        """Combine finished runs' outputs with ``combiner`` and score every member and the
        ensemble on test, writing figures into ``staging`` (``medxfer ensemble``); only
        tasks that :attr:`supports_run_ensembles`.

        Returns:
            The ensemble's summary (``ensemble.json``, without ``combiner`` and ``figures``).
        """
        raise NotImplementedError(f"{self.name} runs cannot be combined by medxfer ensemble")
