"""Final evaluation of a segmentation model: per-case metrics, CIs, figures, report.

The segmentation counterpart of :meth:`medxfer.tasks.image_level.ImageLevelTask.evaluate_and_report`. Whole
images go through :func:`~medxfer.tasks.segmentation.inference.iter_case_predictions` one at a time;
each probability map is reduced to its argmax, scored with :mod:`medxfer.tasks.segmentation.metrics` and
dropped. Only one 2D slice per test case (image, truth, prediction) is kept, for the
overlay figure, so memory does not grow with the size of the volumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel
import numpy as np
import torch

from medxfer import report as R
from medxfer.config import RunConfig
from medxfer.errors import ConfigError
from medxfer.models.domain import TARGET, in_domain
from medxfer.tasks.segmentation import metrics as S
from medxfer.tasks.segmentation.inference import iter_case_predictions
from medxfer.tasks.segmentation.metrics import case_metrics
from medxfer.tasks.summary import clean, run_summary_fields
from medxfer.training import distributed as D
from medxfer.training import shards
from medxfer.training.amp import Precision
from medxfer.training.trainer import FitResult

PER_CASE_CSV = "per_case.csv"
# 3D volumes are shown along data.slice_axis, else the axial axis when the orientation is
# known, else this one (axial for RAS).
DEFAULT_SLICE_AXIS = 2


@dataclass
class _Slice:
    """The slice of one case drawn in the overlay figure."""

    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    where: str  # "" for 2D images, e.g. "axial slice 14 of 36" for volumes
    edges: dict[str, str] = field(default_factory=dict)  # e.g. {"right": "R", ...}


def evaluate_segmentation_and_report(config: RunConfig, run_dir: Path, model: torch.nn.Module,
                                     bundle: Any, result: FitResult, run_info: dict[str, Any],
                                     *, device: torch.device, precision: Precision,
                                     target: Any = None) -> dict[str, Any]:
    """Evaluate on validation and test, write every output file, return the summary.

    Writes ``per_case.csv`` (one row per validation and test case), ``metrics.json``,
    ``figures/training_curves.png``, ``figures/dice_per_class.png`` (test cases),
    ``figures/segmentation_overlays.png`` (best, median and worst test case by mean
    foreground Dice) and ``report.md``/``report.html``.

    HD95 uses ``data.preprocess.spacing`` as the voxel spacing (mm) when it is set;
    otherwise 1 per axis, so HD95 is in voxels (``spacing_assumed`` in the summary).

    Args:
        config: The run config (``eval.bootstrap``, ``train.seed``, ``data.slice_axis``,
            ``data.preprocess.spacing``, sliding-window settings).
        run_dir: The run folder.
        model: The selected model (its mode is restored afterwards).
        bundle: The :class:`~medxfer.data.loading.DataBundle` (``val``, ``test``,
            ``num_classes``, ``class_names``, split sizes).
        result: What the trainer returned.
        run_info: Extra summary keys (backbone, strategy, pretrained, device, ...).
        device: Inference device.
        precision: Autocast setting for inference.
        target: Target-domain data bundle: its test cases' Dice goes to ``target_test``.

    Returns:
        The summary also written as ``metrics.json``: ``task``, ``class_names``, ``val`` and
        ``test`` (see :func:`medxfer.tasks.segmentation.metrics.segmentation_summary`), ``ci95`` (test),
        ``spacing``, ``spacing_assumed``, ``representative_cases``, ``per_case``,
        ``train_seconds``, ``best_epoch``, ``monitor``, ``history``, ``splits``,
        ``figures`` and everything in ``run_info``.
    """
    names = list(bundle.class_names)
    foreground = S.foreground_names(bundle.num_classes, names)
    spacing_cfg = config.data.preprocess.spacing
    score = _Scorer(bundle.num_classes, names, spacing_cfg)

    # Collective in a distributed run: each rank scores its shard, every rank gets all cases.
    val_cases = shards.gather_in_order([score(item, probs) for item, probs in iter_case_predictions(
        model, shards.shard_dataset(bundle.val), config, device=device, precision=precision)])
    scored = []
    for item, probs in iter_case_predictions(model, shards.shard_dataset(bundle.test), config,
                                             device=device, precision=precision):
        pred = probs.argmax(dim=0)
        axcodes = volume_axcodes(config, bundle, str(item.get("id", "")))
        scored.append((score(item, probs, pred), _representative_slice(
            item, pred, _overlay_axis(config, axcodes), axcodes)))
    scored = shards.gather_in_order(scored)
    test_cases, slices = [c for c, _ in scored], [v for _, v in scored]
    summary: dict[str, Any] = {"task": config.task, "class_names": names}
    if target is not None:  # the target domain's test cases, scored alike

        with in_domain(model, TARGET):
            summary["target_test"] = clean(S.segmentation_summary(shards.gather_in_order(
                [score(item, probs) for item, probs in iter_case_predictions(
                    model, shards.shard_dataset(target.test), config, device=device,
                    precision=precision)])))

    writes = D.is_main()  # only rank 0 computes CIs and writes files
    figures_dir = run_dir / "figures"
    chosen = S.representative_cases(test_cases)
    if writes:
        figures_dir.mkdir(parents=True, exist_ok=True)
        R.write_per_case_csv(run_dir / PER_CASE_CSV,
                             [{"split": "val", **c.as_row()} for c in val_cases]
                             + [{"split": "test", **c.as_row()} for c in test_cases],
                             first=["id", "split"])
        R.plot_training_curves(result.history, figures_dir / "training_curves.png",
                               selected_epoch=result.best_epoch, monitor=result.monitor,
                               select=config.train.early_stopping.select)
        R.plot_dice_boxplot(np.array([c.dice for c in test_cases]).reshape(-1, len(foreground)),
                            foreground, figures_dir / "dice_per_class.png")
        panels = []
        for index in dict.fromkeys(chosen.values()):  # distinct cases, best first
            roles = "/".join(role for role, i in chosen.items() if i == index)
            case, view = test_cases[index], slices[index]
            where = f", {view.where}" if view.where else ""
            panels.append({"image": view.image, "truth": view.truth,
                           "prediction": view.prediction, "edges": view.edges,
                           "origin": "lower" if view.where else "upper",
                           "title": f"{roles}: {case.id}\nmean Dice {case.mean_dice:.3f}{where}"})
        R.plot_segmentation_overlays(panels, foreground,
                                     figures_dir / "segmentation_overlays.png")

    ci = S.segmentation_ci(test_cases, n_boot=config.eval.bootstrap, seed=config.train.seed) \
        if config.eval.bootstrap and writes else {}
    summary.update(
        val=clean(S.segmentation_summary(val_cases)),
        test=clean(S.segmentation_summary(test_cases)),
        bootstrap=config.eval.bootstrap,
        spacing=score.spacing_for_report(),
        spacing_assumed=spacing_cfg is None,
        representative_cases={role: test_cases[i].id for role, i in chosen.items()},
        per_case=PER_CASE_CSV,
        **run_summary_fields(config, run_dir, bundle, result, ci, figures_dir),
        **run_info,
    )
    if writes:  # metrics.json last: it marks the run finished
        R.write_report(run_dir, summary)
        R.write_metrics_json(run_dir / "metrics.json", summary)
    return summary


class _Scorer:
    """Scores one case; remembers the spacing it used (for the summary)."""

    def __init__(self, num_classes: int, class_names: list[str],
                 spacing: list[float] | None) -> None:
        self.num_classes, self.class_names, self.spacing = num_classes, class_names, spacing
        self.ndim: int | None = None

    def __call__(self, item: dict[str, Any], probs: torch.Tensor,
                 pred: torch.Tensor | None = None) -> Any:
        pred = probs.argmax(dim=0) if pred is None else pred
        true = item["label"][0]
        self.ndim = true.ndim
        if self.spacing is not None and len(self.spacing) not in (1, true.ndim):
            raise ConfigError(f"data.preprocess.spacing has {len(self.spacing)} values but the "
                              f"label maps are {true.ndim}D; give one value per axis")
        return case_metrics(pred.numpy(), true.numpy(), self.num_classes, self.class_names,
                            spacing=self.spacing, case_id=str(item.get("id", "")))

    def spacing_for_report(self) -> list[float] | None:
        """The spacing per axis that HD95 used (None before any case was scored)."""
        if self.ndim is None:
            return None
        values = [float(s) for s in (self.spacing or [1.0])]
        return values * self.ndim if len(values) == 1 else values


def volume_axcodes(config: RunConfig, bundle: Any, case_id: str) -> str | None:
    """The direction each axis of a preprocessed volume points to (``"RAS"``): the
    configured reorientation (``data.preprocess.orientation``), else the case's NIfTI
    header; None when neither tells (DICOM series, 2D images)."""
    if config.data.preprocess.orientation:
        return config.data.preprocess.orientation
    case = next((c for c in getattr(bundle, "cases", None) or [] if c.get("id") == case_id),
                None)
    path = str(case.get("image", "")) if case else ""
    if not path.endswith((".nii", ".nii.gz")):
        return None
    try:
        return "".join(nibabel.orientations.aff2axcodes(nibabel.load(path).affine))
    except (OSError, ValueError, nibabel.filebasedimages.ImageFileError):
        return None


def _overlay_axis(config: RunConfig, axcodes: str | None) -> int:
    """The axis a volume is sliced along for the overlays: ``data.slice_axis`` when set,
    else the axial one (the axis pointing superior or inferior), else
    :data:`DEFAULT_SLICE_AXIS`."""
    if config.data.slice_axis is not None:
        return config.data.slice_axis
    codes = (axcodes or "").upper()
    return next((i for i, c in enumerate(codes) if c in ("S", "I")), DEFAULT_SLICE_AXIS)


def _representative_slice(item: dict[str, Any], pred: torch.Tensor, axis: int,
                          axcodes: str | None = None) -> _Slice:
    """2D images whole; 3D volumes at the slice along ``axis`` with the most true foreground
    (the most predicted foreground when the truth is empty, the middle slice when both
    are), named by its plane when ``axcodes`` (see :func:`volume_axcodes`) are known.
    Slices are transposed so that ``origin="lower"`` shows them the usual way."""
    image = item["image"][0].float().numpy()
    truth = item["label"][0].numpy()
    prediction = pred.numpy()
    if truth.ndim == 2:  # copies: the item's tensors are not kept alive
        return _Slice(image.copy(), truth.astype(np.int16), prediction.astype(np.int16), "")
    other = tuple(a for a in range(3) if a != axis)
    counts = (truth > 0).sum(axis=other)
    if not counts.any():
        counts = (prediction > 0).sum(axis=other)
    index = int(counts.argmax()) if counts.any() else truth.shape[axis] // 2

    def take(volume: np.ndarray) -> np.ndarray:
        return np.take(volume, index, axis=axis).T

    view = R.slice_view(axcodes, axis)
    return _Slice(take(image), take(truth).astype(np.int16), take(prediction).astype(np.int16),
                  f"{view['plane']} slice {index + 1} of {truth.shape[axis]}", view["edges"])
