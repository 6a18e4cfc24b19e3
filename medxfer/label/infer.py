"""MONAI Label infer tasks that run a medxfer run exactly as ``medxfer predict`` does.

Segmentation writes the mask with :func:`medxfer.tasks.segmentation.prediction.predict_masks` (the
run's preprocessing, sliding-window inference and inversion to the input's grid) and
hands MONAI Label the mask file. Classification returns class probabilities as JSON.
The model served is the app's newest fine-tuned run of the model, else the original.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from medxfer.training.amp import resolve_device
from medxfer.workflows.predict import LoadedRun, load_run, run_threshold
from medxfer.label.appdir import current_run


class _RunCache:
    """The loaded run a model serves, reloaded when a newer fine-tuned run appears."""

    def __init__(self, app_dir: Path, model: str, original: Path) -> None:
        self.app_dir, self.model, self.original = Path(app_dir), model, Path(original)
        self._loaded: LoadedRun | None = None
        self._lock = threading.Lock()

    def get(self) -> LoadedRun:
        with self._lock:
            path = current_run(self.app_dir, self.model, self.original)
            if self._loaded is None or self._loaded.run_dir != path:
                self._loaded = load_run(path, device=resolve_device("auto"))
            return self._loaded


def _names(loaded: LoadedRun) -> list[str]:
    count = int(loaded.sidecar["num_classes"])
    names = loaded.class_names
    return names if len(names) == count else [str(i) for i in range(count)]


class MedxferSegmentationInfer(InferTask):
    """Segment the requested image with a medxfer segmentation run.

    Args:
        app_dir: The app folder (for fine-tuned runs).
        model: The model's name in MONAI Label.
        run_dir: The run it serves until it has been fine-tuned.
    """

    def __init__(self, app_dir: Path, model: str, run_dir: Path) -> None:
        self._runs = _RunCache(app_dir, model, run_dir)
        loaded = self._runs.get()
        names = _names(loaded)
        self.label_names = {name: index for index, name in enumerate(names) if index > 0}
        super().__init__(type=InferType.SEGMENTATION, labels=self.label_names,
                         dimension=int(loaded.sidecar["spatial_dims"]) if
                         loaded.config.data.slice_axis is None else 3,
                         description=f"medxfer {loaded.config.model.backbone.name} "
                                     f"segmentation from run {Path(run_dir).name}")
        self.model = model

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
                        "run": str(loaded.run_dir), "voxels": record["voxels"],
                        "latencies": {"infer": latency, "total": latency}}


class MedxferClassificationInfer(InferTask):
    """Classify the requested image with a medxfer classification run (JSON result)."""

    def __init__(self, app_dir: Path, model: str, run_dir: Path) -> None:
        self._runs = _RunCache(app_dir, model, run_dir)
        loaded = self._runs.get()
        super().__init__(type=InferType.CLASSIFICATION, labels=_names(loaded),
                         dimension=int(loaded.sidecar["spatial_dims"]),
                         description=f"medxfer {loaded.config.model.backbone.name} "
                                     f"classification from run {Path(run_dir).name}")
        self.model = model

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
                      "run": str(loaded.run_dir)}
