"""MONAI bundle export: a folder MONAI's bundle tools run without medxfer.

Layout (MONAI's bundle specification)::

    configs/metadata.json    versions, task, input/output description, class names (or
                             a regression run's target), how the network is defined
    configs/inference.json   MONAI's standard inference properties (ConfigWorkflow "infer")
    configs/train.json       fine-tuning inside MONAI (ConfigWorkflow "train")
    configs/logging.conf     Python logging, as MONAI's bundles have it
    models/model.pt          the weights: a state dict of ``network_def``
    models/model.ts          the network as TorchScript
    docs/README.md           how to run and fine-tune it
    LICENSE                  Apache-2.0 for the code parts; the weights' terms

``python -m monai.bundle run --bundle_root B --config_file B/configs/inference.json
--meta_file B/configs/metadata.json --dataset_dir IMAGES --output_dir OUT`` writes one
mask per NIfTI file (segmentation) or a ``predictions.csv`` (classification: class
probabilities; regression: the network's output, as ``medxfer predict`` writes it).
"""

from __future__ import annotations

import json
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import monai
import numpy
import torch

from medxfer import __version__
from medxfer.io import atomic_write_text, read_json_object
from medxfer.tasks import task_of
from medxfer.workflows.export.bundle_configs import LOGGING_CONF, inference_config, train_config
from medxfer.workflows.export.bundle_docs import licence, readme
from medxfer.workflows.export.bundle_network import (NetworkDefinition, library_definition,
                                                     torchscript_definition)
from medxfer.workflows.export.bundle_transforms import refuse_slice_wise
from medxfer.workflows.export.common import OutputCheck, size_divisor
from medxfer.workflows.export.torchscript import export_torchscript

INFERENCE_CONFIG = "configs/inference.json"
TRAIN_CONFIG = "configs/train.json"
LOGGING = "configs/logging.conf"
METADATA = "configs/metadata.json"
WEIGHTS = "models/model.pt"
README_PATH = "docs/README.md"
LICENSE_PATH = "LICENSE"
SCHEMA_URL = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
              "meta_schema_20240725.json")


def metadata(loaded: Any, network: NetworkDefinition, check: OutputCheck,
             torchscript_check: OutputCheck) -> dict[str, Any]:
    """The ``configs/metadata.json`` of the run's bundle."""
    sidecar, config = loaded.sidecar, loaded.config
    dims = int(sidecar["spatial_dims"])
    spatial = ["*"] * dims
    name = config.model.backbone.name
    how = (f"network_def is {network.target}" if network.target is not None else
           f"network_def is the TorchScript model models/model.ts ({network.fallback_reason})")
    return {
        "schema": SCHEMA_URL,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medxfer {__version__} from a medxfer run"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": _version("nibabel")},
        "name": f"medxfer {config.task} ({name})",
        "task": f"{config.task} with a {name} network fine-tuned by medxfer",
        "description": "Exported from a medxfer run; preprocessing, inferer and network "
                       f"reproduce `medxfer predict`; {how}.",
        "authors": "medxfer (the run's author trained the weights)",
        "copyright": "see LICENSE: the weights follow the data and weights the run was "
                     "trained on",
        "data_source": _data_source(loaded),
        "data_type": "nibabel" if dims == 3 else "png",
        "image_classes": f"{int(sidecar['in_channels'])} channel(s), preprocessed as "
                         "configs/inference.json's preprocessing says",
        "pred_classes": _pred_classes(loaded),
        "eval_metrics": _test_metrics(loaded),
        "intended_use": "research; not validated for clinical use",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "magnitude",
                                 "num_channels": int(sidecar["in_channels"]),
                                 "spatial_shape": spatial, "dtype": "float32",
                                 "value_range": [], "is_patch_data": False,
                                 "channel_def": {"0": "image"}}},
            "outputs": {"pred": _output_format(loaded)},
        },
        "medxfer": {"task": config.task, **_labels(loaded),
                    **({"predictions_csv_columns": csv_columns(loaded),
                        "predictions_csv_header": False}
                       if not task_of(config).labels_are_masks else {}),
                    "network": network.describe(),
                    "size_divisor": size_divisor(loaded), "check": check.as_dict(),
                    "torchscript_check": torchscript_check.as_dict()},
    }


def _summary(loaded: Any) -> dict[str, Any]:
    path = loaded.run_dir / "metrics.json"
    if not path.is_file():
        return {}
    return read_json_object(path, what_to_do="it holds the run's results")


def _data_source(loaded: Any) -> str:
    return str(_summary(loaded).get("data_source") or loaded.config.data.path
               or "not recorded in the run")


def _test_metrics(loaded: Any) -> dict[str, float]:
    """The run's test-split metrics (empty for a run that has not finished)."""
    test = _summary(loaded).get("test") or {}
    return {f"test_{k}": float(v) for k, v in test.items() if k != "n"
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _pred_classes(loaded: Any) -> str:
    task = task_of(loaded.config)
    if task.labels_are_values:
        return f"one value: the predicted {loaded.target_name!r}"
    names = ", ".join(f"{i} {n}" for i, n in enumerate(loaded.output_names))
    if task.labels_are_masks:
        return f"{len(loaded.output_names)} channels of class logits ({names}); the saved " \
               "mask holds the class index of each voxel"
    return f"{len(loaded.output_names)} class probabilities ({names})"


def _output_format(loaded: Any) -> dict[str, Any]:
    """The ``network_data_format`` of the bundle's prediction ``pred``, by task."""
    task = task_of(loaded.config)
    if task.labels_are_values:
        return {"type": "number", "format": "regression", "num_channels": 1,
                "spatial_shape": [], "dtype": "float32", "value_range": [],
                "is_onehot": False,
                "channel_def": {0: f"predicted value of {loaded.target_name!r}"}}
    names = loaded.output_names
    if task.labels_are_masks:
        spatial = ["*"] * int(loaded.sidecar["spatial_dims"])
        return {"type": "image", "format": "segmentation", "num_channels": len(names),
                "spatial_shape": spatial, "dtype": "float32", "value_range": [0, 1],
                "is_onehot": True, "channel_def": dict(enumerate(names))}
    return {"type": "probabilities", "format": "classes", "num_channels": len(names),
            "spatial_shape": [], "dtype": "float32", "value_range": [0, 1],
            "is_onehot": True, "channel_def": dict(enumerate(names))}


def _labels(loaded: Any) -> dict[str, Any]:
    """What the output's channels are: the class names, or a regression run's target."""
    if task_of(loaded.config).labels_are_values:
        return {"target": loaded.target_name}
    return {"class_names": loaded.output_names}


def csv_columns(loaded: Any) -> list[str] | None:
    """The columns of a classification or regression bundle's ``predictions.csv``, named as
    ``medxfer predict`` names them; MONAI's ``CSVSaver`` writes no header row, so the bundle's
    metadata and README state them. None for segmentation (no CSV)."""
    task = task_of(loaded.config)
    if task.labels_are_masks:
        return None
    if task.labels_are_values:
        return ["file", "prediction"]
    return ["file", *[f"prob_{n}" for n in loaded.output_names]]


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return ""


def export_bundle(loaded: Any, folder: Path, *, registries: Any | None = None
                  ) -> tuple[list[Path], OutputCheck]:
    """Write the bundle of ``loaded`` into ``folder`` (exists, empty).

    Args:
        loaded: A run from :func:`medxfer.workflows.predict.load_run`.
        folder: Where to write.
        registries: Plugin registries, to rebuild the network when looking for its library
            class (installed plugins when omitted).

    Returns:
        The files written and the output check of the network ``inference.json`` runs.

    Raises:
        ExportError: when the run cannot be expressed as a bundle or the exported network
            does not reproduce medxfer's logits.
    """
    refuse_slice_wise(loaded)  # before any file is written
    folder = Path(folder)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    ts_path, ts_check = export_torchscript(loaded, folder / "models", fmt="monai-bundle")
    network = library_definition(loaded, registries)
    if isinstance(network, str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, works
            traced = torch.jit.load(str(ts_path), map_location="cpu")
        network = torchscript_definition(traced, network)
    check = network.check or ts_check
    files = {INFERENCE_CONFIG: json.dumps(inference_config(loaded, network), indent=2) + "\n",
             TRAIN_CONFIG: json.dumps(train_config(loaded, network), indent=2) + "\n",
             LOGGING: LOGGING_CONF,
             METADATA: json.dumps(metadata(loaded, network, check, ts_check), indent=2) + "\n",
             README_PATH: readme(loaded, network, csv_columns(loaded)),
             LICENSE_PATH: licence(loaded, _data_source(loaded))}
    torch.save(network.state_dict, folder / WEIGHTS)
    for relative, text in files.items():
        atomic_write_text(folder / relative, text)
    return [folder / WEIGHTS, ts_path, *[folder / relative for relative in files]], check
