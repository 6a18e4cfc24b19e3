"""Rebuilding a finished run's model for prediction on new files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch

from medxfer.config import RunConfig, load_config
from medxfer.data.inputs import prediction_inputs
from medxfer.data.loading import inference_transform
from medxfer.errors import CheckpointError, notify
from medxfer.io import read_json_object
from medxfer.models import EnsembleNetwork, SegmentationNetwork, TransferNetwork
from medxfer.models.domain import choose_domain
from medxfer.plugins import Registries, build_registries
from medxfer.tasks import PredictionOutput, task_of
from medxfer.training.checkpoints import (
    BEST_SIDECAR,
    BEST_WEIGHTS,
    load_model_weights,
    read_sidecar,
)
from medxfer.workflows.domain import restore_structure
from medxfer.workflows.run_setup import wants_imagenet_norm


@dataclass
class LoadedRun:
    """A finished run's config, model (eval mode) and what produced it."""

    run_dir: Path
    config: RunConfig
    model: TransferNetwork | SegmentationNetwork | EnsembleNetwork
    sidecar: dict[str, Any]
    _transform: Callable[[str | Path], torch.Tensor] | None = field(
        default=None, init=False, repr=False, compare=False)

    def preprocess(self, path: str | Path) -> torch.Tensor:
        """The model's input for one image file, preprocessed exactly as the run's
        evaluation data (``data.preprocess``, channels, ImageNet normalisation).

        Args:
            path: An image file or DICOM series folder.

        Returns:
            A float32 tensor ``[C, *spatial]``; ``model(x[None])`` gives its outputs. A
            segmentation image is not padded: give it to a sliding-window inferer, or pad
            its sides to a multiple of the network's ``size_divisor``.

        Raises:
            DataError: for an unreadable file, or one whose dimensionality or channels do
                not fit the model.
        """
        if self._transform is None:
            dims = 3 if self.config.data.slice_axis is not None else \
                int(self.sidecar["spatial_dims"])
            self._transform = inference_transform(
                self.config, imagenet_norm=self.imagenet_norm, spatial_dims=dims,
                in_channels=int(self.sidecar["in_channels"]))
        return self._transform(path)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return list(self.sidecar.get("class_names") or [])

    @property
    def output_names(self) -> list[str]:
        """A name per output class: the class names, or ``"0"``, ``"1"``, ... when the run
        recorded none."""
        return self.class_names or [str(i) for i in range(int(self.sidecar["num_classes"]))]

    @property
    def target_name(self) -> str:
        """A regression run's target: its label column (``"target"`` if unrecorded). A
        regression run records the label column as its only "class name"."""
        names = self.class_names
        return str(names[0]) if names else "target"

    @property
    def threshold(self) -> float | None:
        """The binary decision threshold chosen on validation (see :func:`run_threshold`)."""
        return run_threshold(self.run_dir)

    @property
    def imagenet_norm(self) -> bool:
        """Whether the run's inputs were normalised with ImageNet's mean and std."""
        if "imagenet_norm" in self.sidecar:
            return bool(self.sidecar["imagenet_norm"])

        pretrained = "none" if self.config.strategy.name == "scratch" else \
            self.config.model.backbone.kwargs.get("pretrained", "none")
        return wants_imagenet_norm(self.config, pretrained)


def run_threshold(run_dir: str | Path) -> float | None:
    """The binary decision threshold a run chose on validation (``metrics.json``), or
    ``None`` (no metrics yet, or not a binary classification run).

    Raises:
        CheckpointError: when ``metrics.json`` is unreadable.
    """
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return None
    return read_json_object(path, what_to_do="it holds the decision threshold chosen on "
                            "validation. Restore it from a copy or train the run again"
                            ).get("threshold")


def unfinished_warning(run_dir: str | Path) -> str | None:
    """What a user of ``run_dir``'s model should know when the run has not finished (no
    ``metrics.json``: killed, interrupted or diverged before its test evaluation), else
    ``None``. Its selected model is then the best so far, and a binary classifier has no
    decision threshold chosen on validation yet."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file():
        return None
    return (f"{str(run_dir)!r} has not finished (no metrics.json: it stopped before its test "
            "evaluation), so this uses its best model so far, and a binary classifier decides "
            "at probability 0.5, not at a threshold chosen on validation; finish it first with "
            f"`medxfer run --resume --output {run_dir}`")


def load_run(run_dir: str | Path, *, registries: Registries | None = None,
             device: torch.device | None = None) -> LoadedRun:
    """Rebuild the network of ``run_dir`` and load its selected weights.

    The backbone is built without pretrained weights (the run's own weights replace
    them), with the channels and dimensions recorded in ``model.json``. A segmentation
    run's plugin also gets ``num_classes`` and its network is wrapped in a
    :class:`medxfer.models.SegmentationNetwork`, as in training. A run trained with
    ``ensemble.members > 1`` gives an :class:`medxfer.models.EnsembleNetwork` of its members.

    Raises:
        CheckpointError: when the folder is not a finished medxfer run or its weights do
            not fit the rebuilt network.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / BEST_WEIGHTS).is_file():
        raise CheckpointError(
            f"{str(run_dir)!r} is not a finished medxfer run (needs config.yaml and "
            f"{BEST_WEIGHTS}); pass the --output folder of `medxfer run`")
    config = load_config(run_dir / "config.yaml")
    sidecar = read_sidecar(run_dir)
    missing = [k for k in ("num_classes", "in_channels", "spatial_dims") if k not in sidecar]
    if missing:
        raise CheckpointError(f"{str(run_dir / BEST_SIDECAR)!r} lacks {', '.join(missing)}; "
                              "it was not written by `medxfer run`")
    registries = registries or build_registries()
    members = ensemble_size(sidecar)
    # ensemble.members: the members' networks, outputs averaged (ensemble.time_limit can
    # leave an ensemble of one: it is saved as an ensemble all the same)
    if members > 1 or isinstance(sidecar.get("ensemble"), dict):
        model: TransferNetwork | SegmentationNetwork | EnsembleNetwork = EnsembleNetwork(
            [build_run_network(config, sidecar, registries) for _ in range(members)])
    else:
        model = build_run_network(config, sidecar, registries)
    if config.domain_adaptation is not None:  # e.g. per-domain batch norms: same layers

        restore_structure(config, registries, model)
    load_selected_weights(model, run_dir)
    if sidecar.get("tta_axes"):  # eval.tta: flip
        for net in (model.members if isinstance(model, EnsembleNetwork) else [model]):
            if isinstance(net, TransferNetwork):
                net.tta_axes = [int(a) for a in sidecar["tta_axes"]]
    model.to(device or torch.device("cpu")).eval()
    return LoadedRun(run_dir, config, model, sidecar)


def load_selected_weights(model: torch.nn.Module, run_dir: Path) -> None:
    """Load ``run_dir/model.safetensors`` (the run's selected weights) into ``model``.

    Raises:
        CheckpointError: when the file is missing or corrupt, or does not fit ``model``.
    """
    try:
        model.load_state_dict(load_model_weights(run_dir / BEST_WEIGHTS))
    except RuntimeError as exc:
        raise CheckpointError(
            f"weights in {str(run_dir / BEST_WEIGHTS)!r} do not fit the network described by "
            f"its config.yaml ({str(exc).splitlines()[0]})") from None


def ensemble_size(sidecar: dict[str, Any]) -> int:
    """How many member networks a run's saved model holds (1 unless ``ensemble.members``)."""
    info = sidecar.get("ensemble")
    return int(info.get("members", 1)) if isinstance(info, dict) else 1


def build_run_network(config: RunConfig, sidecar: dict[str, Any],
                      registries: Registries) -> TransferNetwork | SegmentationNetwork:
    """The run's task network (one member) with untrained weights, shapes from
    ``model.json`` (``sidecar``), built as in training."""
    shapes = SimpleNamespace(**{k: int(sidecar[k]) for k in
                                ("in_channels", "spatial_dims", "num_classes")})
    kwargs = {**config.model.backbone.kwargs, "pretrained": "none"}
    return task_of(config).build_network(config, registries, shapes, kwargs)[0]


def predict_files(run_dir: str | Path, inputs: Sequence[str | Path], output: str | None = None,
                  *, registries: Registries | None = None, dicom_seg: bool = False,
                  domain: str = "source") -> PredictionOutput:
    """Apply a finished run's model to new image files (``medxfer predict``).

    What is written depends on the run's task: classification and regression write one
    CSV row per input (to ``output``, a CSV file or a folder, or given back as text),
    segmentation one mask per input into the ``output`` folder (see
    :meth:`medxfer.tasks.base.Task.predict_files`). An unfinished run gives a
    :class:`~medxfer.errors.MedxferWarning` first.

    Args:
        run_dir: Folder of a finished ``medxfer run``.
        inputs: Image files, DICOM series folders, or datasets in any layout
            :func:`medxfer.data.layouts.build_datalist` reads (a folder, a manifest, a
            MONAI datalist), which stand for their images (see
            :func:`medxfer.data.inputs.prediction_inputs`).
        output: Where to write (see above).
        registries: Plugin registries (built from installed plugins when omitted).
        dicom_seg: Segmentation: also write a DICOM SEG for each DICOM input.
        domain: For runs with domain-specific layers (dsbn, adabn): ``source`` or ``target``.

    Returns:
        Text for standard output and messages about what was written.

    Raises:
        CheckpointError: when ``run_dir`` is not a finished run.
        ConfigError: when ``output`` does not fit the run's task.
        DataError: when an input cannot be read.
    """
    loaded = load_run(run_dir, registries=registries)
    return predict_loaded(loaded, inputs, output, dicom_seg=dicom_seg, domain=domain)


def predict_loaded(loaded: LoadedRun, inputs: Sequence[str | Path], output: str | None = None,
                   *, dicom_seg: bool = False, domain: str = "source") -> PredictionOutput:
    """:func:`predict_files` for a run already loaded with :func:`load_run`."""
    files, notes = prediction_inputs(inputs)
    choose_domain(loaded.model, domain, loaded.run_dir)
    unfinished = unfinished_warning(loaded.run_dir)
    if unfinished:
        notify(unfinished)
    done = task_of(loaded.config).predict_files(loaded, files, output, dicom_seg=dicom_seg)
    done.messages[:0] = notes
    return done
