"""A dataset's fingerprint: what the plan's rules read of it.

It is made from the summary ``medxfer data inspect`` prints (:func:`medxfer.data.inspect.
summarize_dataset`, whose ``--json`` form is kept beside the plan), reduced to the numbers
the rules decide by: the task, dimensionality, channels, the median size and spacing, the
stored data types and intensities, the modality, the cases per split and class, and the
foreground share of masks. Only training and validation labels are counted: the plan never
looks at test labels.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from medxfer.data.inspect import DatasetSummary, summary_json
from medxfer.errors import DataError
from medxfer.tasks import TASKS, label_kind


@dataclass
class Fingerprint:
    """The dataset as the planning rules see it.

    Attributes:
        path: The dataset file or folder.
        layout: The layout it was read as (``data.format``).
        task: ``classification``, ``regression`` or ``segmentation``.
        spatial_dims: 2 or 3.
        channels: The most common channel count.
        median_size: Median spatial size per axis (voxels).
        min_size: Smallest size per axis.
        max_size: Largest size per axis.
        median_spacing: Median voxel spacing per axis (mm; 1 where unknown).
        dtypes: Stored data types and how many cases have each.
        modality: As the dataset declares it (``CT``, ``MR``, ...), or ``None``.
        intensity: ``min``, ``max``, ``p01``, ``p99`` of the cases read (see ``data inspect``).
        cases: Cases per split (``train``, ``val``, ``test``; ``all`` when not split).
        train_classes: Training cases per class (classification), or the training masks
            holding each class (segmentation); cases of a dataset not yet split count here.
        class_names: Class names in label order.
        foreground_fraction: Mean share of mask voxels that are not background.
        json: The whole ``data inspect --json`` object.
    """

    path: str
    layout: str
    task: str
    spatial_dims: int
    channels: int
    median_size: list[int]
    min_size: list[int]
    max_size: list[int]
    median_spacing: list[float]
    dtypes: dict[str, int]
    modality: str | None
    intensity: dict[str, float]
    cases: dict[str, int]
    train_classes: dict[str, int] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    foreground_fraction: float | None = None
    json: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def training_cases(self) -> int:
        """Cases a run trains on: the stored training split, else about 70% of all."""
        if "train" in self.cases:
            return self.cases["train"]
        return int(round(0.7 * sum(self.cases.values())))

    @property
    def minority_fraction(self) -> float | None:
        """The smallest class's share of the training cases (classification), else None."""
        counts = [n for n in self.train_classes.values()]
        if label_kind(self.task) != "class" or not counts or not sum(counts):
            return None
        return min(counts) / sum(counts)

    @property
    def anisotropy(self) -> float:
        """The coarsest axis's spacing over the finest's (1 for isotropic voxels)."""
        spacing = [s for s in self.median_spacing if s > 0]
        return max(spacing) / min(spacing) if spacing else 1.0

    @property
    def uint8(self) -> bool:
        """Whether every case is stored as 8-bit integers."""
        return bool(self.dtypes) and set(self.dtypes) <= {"uint8"}

    def as_dict(self) -> dict[str, Any]:
        """The fingerprint without the inspect JSON (what ``plan.yaml`` records)."""
        out = asdict(self)
        out.pop("json")
        return out


def fingerprint(summary: DatasetSummary) -> Fingerprint:
    """The fingerprint of a dataset summary.

    Raises:
        DataError: when the data cannot be planned for: unlabelled, problems that a run
            would refuse, or no readable case.
    """
    data = summary_json(summary)
    where = f"{data['path']!r}"
    if data["problems"]:
        shown = "; ".join(data["problems"][:3])
        more = f" (and {len(data['problems']) - 3} more)" if len(data["problems"]) > 3 else ""
        raise DataError(f"{where}: a run would refuse this data: {shown}{more}; see "
                        f"`medxfer data inspect {data['path']}`")
    if data["task"] not in TASKS:
        raise DataError(f"{where} holds no labels ({data['layout']} layout read as "
                        f"{data['task']}); a plan needs labelled cases: see docs/data-formats.md")
    scans = [s for s in summary.scans if s.spatial_dims]
    if not scans:
        raise DataError(f"{where}: no case could be read; see `medxfer data inspect`")
    dims = int(data["spatial_dims"])
    shapes = [list(s.shape) for s in scans if len(s.shape) == dims]
    spacings = [list(s.spacing) for s in scans if s.spacing and len(s.spacing) == dims]
    channels = Counter(int(s.channels) for s in scans).most_common(1)[0][0]
    cases = {split: int(v["cases"]) for split, v in data["splits"].items()}
    counted = "train" if "train" in data["splits"] else "all"
    classes = dict(data["splits"][counted]["classes"]) if counted in data["splits"] else {}
    foreground = (data.get("foreground") or {}).get("fraction_mean")
    return Fingerprint(
        path=str(data["path"]), layout=str(data["layout"]), task=str(data["task"]),
        spatial_dims=dims, channels=channels,
        median_size=[int(statistics.median(axis)) for axis in zip(*shapes)],
        min_size=[int(min(axis)) for axis in zip(*shapes)],
        max_size=[int(max(axis)) for axis in zip(*shapes)],
        median_spacing=[float(statistics.median(axis)) for axis in zip(*spacings)]
        if spacings else [1.0] * dims,
        dtypes={str(k): int(v) for k, v in data["dtypes"].items()},
        modality=data.get("modality"), intensity=dict(data.get("intensity") or {}),
        cases=cases, train_classes=classes, class_names=list(data["classes"]),
        foreground_fraction=foreground, json=data)
