"""Segmentation: a label map per image, from a whole network a segmentation plugin builds.

Training draws patches (``data.patch``) or whole images; validation and evaluation run
whole images through a sliding window (:mod:`.inference`), one case at a time; the report
has Dice, IoU and HD95 per class (:mod:`.evaluation`); ``medxfer predict`` writes masks in
each input's format and on its grid (:mod:`.prediction`); ``medxfer ensemble`` combines
probability maps case by case (:mod:`.ensemble`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from monai.data import list_data_collate

from medxfer.config import RunConfig
from medxfer.errors import ConfigError, InputSizeError
from medxfer.models import build_segmentation_network, builds_segmentation
from medxfer.plugins import Registries
from medxfer.tasks.backbone_build import create_segmentation_model
from medxfer.tasks.base import PredictionOutput, Task
from medxfer.tasks.networks import backbone_entry
from medxfer.tasks.segmentation.ensemble import evaluate_segmentation_ensemble
from medxfer.tasks.segmentation.evaluation import evaluate_segmentation_and_report
from medxfer.tasks.segmentation.inference import iter_case_predictions, window_hint, window_size
from medxfer.tasks.segmentation.losses import segmentation_loss
from medxfer.tasks.segmentation.metrics import mean_foreground_dice
from medxfer.tasks.segmentation.prediction import SUMMARY_NAME, predict_masks
from medxfer.training import shards
from medxfer.training.amp import Precision, resolve_device
from medxfer.training.trainer import FitResult


class SegmentationTask(Task):
    """A label map per image; the network outputs one logit map per class."""

    name = "segmentation"
    label_kind = "mask"
    supports_run_ensembles = True

    def build_network(self, config: RunConfig, registries: Registries, bundle: Any,
                      backbone_kwargs: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
        """The whole network of a segmentation plugin, and its encoder view (what
        strategies freeze and group)."""
        entry = backbone_entry(config, registries)
        if not builds_segmentation(entry.factory):
            choices = [e.name for e in registries.backbone.entries()
                       if builds_segmentation(e.factory)]
            raise ConfigError(
                f"model.backbone.name: {entry.name!r} builds classifier features, not a "
                f"segmentation network; for task: segmentation choose one of "
                f"{', '.join(choices) or '(none)'}")
        kwargs = {"in_channels": bundle.in_channels, "spatial_dims": bundle.spatial_dims,
                  **backbone_kwargs, "num_classes": bundle.num_classes}
        model = create_segmentation_model(config, registries, entry, kwargs)
        network = build_segmentation_network(model)
        return network, network.backbone

    def loss(self, config: RunConfig, train_labels: list[int], num_classes: int,
             device: torch.device) -> torch.nn.Module:
        """MONAI's Dice-type loss of ``loss.name`` (DiceCE by default), or cross-entropy."""
        return segmentation_loss(config)

    def collate(self) -> Callable[[list[Any]], Any]:
        """MONAI's ``list_data_collate``: flattens the patches drawn from each case."""
        return list_data_collate

    def validator(self, config: RunConfig, bundle: Any, val_loader: Any, device: torch.device,
                  precision: Precision, loss_fn: Any) -> Callable[[torch.nn.Module],
                                                                  dict[str, float]]:
        """Whole-image (sliding-window) inference on every validation case: the loss and
        the mean foreground Dice."""

        def validate(net: torch.nn.Module) -> dict[str, float]:
            scores = []
            for item, probs in iter_case_predictions(net, shards.shard_dataset(bundle.val),
                                                     config, device=device,
                                                     precision=precision):
                label = item["label"][None]
                logits = torch.log(probs.clamp_min(1e-8))[None]
                scores.append((float(loss_fn(logits.to(device), label.to(device))),
                               mean_foreground_dice(probs[None], label, bundle.num_classes)))
            scores = shards.gather_in_order(scores)  # every rank's shard, in dataset order
            losses, dices = [s[0] for s in scores], [s[1] for s in scores]
            return {"val_loss": float(np.mean(losses)) if losses else float("nan"),
                    "val_dice": float(np.nanmean(dices)) if dices else float("nan")}

        return validate

    def check_evaluation_input(self, config: RunConfig, network: torch.nn.Module,
                               channels: int, input_size: list[int],
                               forward: Callable[[torch.nn.Module, int, list[int]], None]
                               ) -> None:
        """The network takes the windows of ``eval.sliding_window.roi_size`` (one window,
        padded as inference pads it), not only the training input.

        Raises:
            InputSizeError: with a hint naming ``eval.sliding_window.roi_size``.
        """
        if not config.eval.sliding_window.roi_size:
            return
        roi = window_size(config, input_size, int(getattr(network, "size_divisor", 1)))
        try:
            forward(network, channels, roi)
        except InputSizeError as exc:
            raise exc.with_hint(window_hint(config)) from None

    def evaluate_and_report(self, config: RunConfig, run_dir: Path, model: torch.nn.Module,
                            bundle: Any, result: FitResult, run_info: dict[str, Any], *,
                            val_loader: Any, test_loader: Any, device: torch.device,
                            precision: Precision, loss_fn: Any,
                            target: Any = None) -> dict[str, Any]:
        """Per-case Dice, IoU and HD95 with CIs, figures and the report (see
        :func:`.evaluation.evaluate_segmentation_and_report`)."""
        return evaluate_segmentation_and_report(config, run_dir, model, bundle, result,
                                                run_info, device=device, precision=precision,
                                                target=target)

    def predict_files(self, loaded: Any, inputs: Sequence[Path], output: str | None, *,
                      dicom_seg: bool = False) -> PredictionOutput:
        """One mask per input in the ``output`` folder, and ``masks.csv`` (see
        :func:`.prediction.predict_masks`).

        Raises:
            ConfigError: when ``output`` is missing or is a file.
        """
        if output is None:
            raise ConfigError("predict: a segmentation run writes mask files; pass --output "
                              "FOLDER")
        folder = Path(output)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--output {str(folder)!r} is a file; for a segmentation run it "
                              "names the folder for the masks")
        records = predict_masks(loaded, list(inputs), folder, device=resolve_device("auto"),
                                dicom_seg=dicom_seg)
        messages = []
        for record in records:
            extra = f" and {record['dicom_seg']}" if record["dicom_seg"] else ""
            messages.append(f"{record['input']} -> {record['mask']}{extra}")
        messages.append(f"wrote {len(records)} masks; summary in {folder / SUMMARY_NAME}")
        return PredictionOutput(messages=messages)

    def describe_output(self, loaded: Any) -> dict[str, Any]:
        """Logit maps, one per class; softmax over the channels gives probabilities."""
        return {"name": "logits", "class_names": loaded.output_names,
                "meaning": "softmax over dimension 1 gives class probabilities"}

    def evaluate_run_ensemble(self, members: Sequence[Any], combiner: Any, info: dict[str, Any],
                              staging: Path, device: torch.device) -> dict[str, Any]:
        """Combine the members' probability maps case by case (see
        :func:`.ensemble.evaluate_segmentation_ensemble`)."""
        return evaluate_segmentation_ensemble(members, combiner, info, staging, device)
