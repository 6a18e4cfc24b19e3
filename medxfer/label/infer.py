"""MONAI Label infer tasks that run a medxfer run exactly as ``medxfer predict`` does.

Segmentation writes the mask with :func:`medxfer.tasks.segmentation.prediction.predict_masks` (the
run's preprocessing, sliding-window inference and inversion to the input's grid) and
hands MONAI Label the mask file. Classification returns class probabilities as JSON.
The model served is the run the app's pointer names (:mod:`medxfer.label.served`): the
original run until a fine-tuned candidate is promoted. Results name the run by its id
(``original`` or the fine-tuned run's folder name), never by host path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from medxfer.label.served import ServedModel
from medxfer.workflows.predict import LoadedRun, run_threshold


def _names(loaded: LoadedRun) -> list[str]:
    count = int(loaded.sidecar["num_classes"])
    names = loaded.class_names
    return names if len(names) == count else [str(i) for i in range(count)]


class MedxferSegmentationInfer(InferTask):
    """Segment the requested image with a medxfer segmentation run.

    Args:
        runs: The run the model serves.
    """

    def __init__(self, runs: ServedModel) -> None:
        self._runs = runs
        loaded = self._runs.get()
        names = _names(loaded)
        self.label_names = {name: index for index, name in enumerate(names) if index > 0}
        super().__init__(type=InferType.SEGMENTATION, labels=self.label_names,
                         dimension=int(loaded.sidecar["spatial_dims"]) if
                         loaded.config.data.slice_axis is None else 3,
                         description=f"medxfer {loaded.config.model.backbone.name} "
                                     f"segmentation from run {runs.original.name}")
        self.model = runs.model

    def is_valid(self) -> bool:
        """Always servable: the weights were checked when the task was made."""
        return True

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Write the mask of ``request["image"]`` to a temporary file MONAI Label sends back."""
        from medxfer.tasks.segmentation.prediction import predict_masks

        start = time.perf_counter()
        loaded = self._runs.get()
        image = Path(request["image"])
        with tempfile.TemporaryDirectory(prefix="medxfer_label_") as tmp:
            record = predict_masks(loaded, [image], Path(tmp) / "out",
                                   device=next(loaded.model.parameters()).device)[0]
            mask = Path(record["mask"])
            suffix = ".nii.gz" if mask.name.endswith(".nii.gz") else mask.suffix
            fd, result = tempfile.mkstemp(prefix="medxfer_mask_", suffix=suffix)
            os.close(fd)
            shutil.move(str(mask), result)
        latency = round(time.perf_counter() - start, 3)
        return result, {"label_names": self.label_names, "model": self.model,
                        "run": self._runs.run_id(loaded), "voxels": record["voxels"],
                        "latencies": {"infer": latency, "total": latency}}


class MedxferClassificationInfer(InferTask):
    """Classify the requested image with a medxfer classification run (JSON result)."""

    def __init__(self, runs: ServedModel) -> None:
        self._runs = runs
        loaded = self._runs.get()
        super().__init__(type=InferType.CLASSIFICATION, labels=_names(loaded),
                         dimension=int(loaded.sidecar["spatial_dims"]),
                         description=f"medxfer {loaded.config.model.backbone.name} "
                                     f"classification from run {runs.original.name}")
        self.model = runs.model

    def is_valid(self) -> bool:
        """Always servable."""
        return True

    @torch.no_grad()
    def __call__(self, request: dict[str, Any]) -> tuple[None, dict[str, Any]]:
        """``{"prediction": name, "probabilities": {name: p}}`` for ``request["image"]``."""
        from medxfer.data import inference_transform

        loaded = self._runs.get()
        norm = bool(loaded.sidecar.get("imagenet_norm", False))
        transform = inference_transform(loaded.config, imagenet_norm=norm,
                                        spatial_dims=int(loaded.sidecar["spatial_dims"]),
                                        in_channels=int(loaded.sidecar["in_channels"]))
        device = next(loaded.model.parameters()).device
        x = transform(str(request["image"]))[None].to(device)
        probs = torch.softmax(loaded.model(x).float(), dim=1)[0].cpu()
        names = _names(loaded)
        threshold = run_threshold(loaded.run_dir)
        if threshold is not None and len(names) == 2:
            label = int(probs[1] >= threshold)
        else:
            label = int(probs.argmax())
        return None, {"prediction": names[label], "model": self.model,
                      "probabilities": {n: float(p) for n, p in zip(names, probs)},
                      "run": self._runs.run_id(loaded)}
