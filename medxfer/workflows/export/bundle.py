"""MONAI bundle export: a folder MONAI's bundle tools run without medxfer.

Layout (MONAI's bundle specification)::

    configs/metadata.json    versions, task, input/output description, class names (or
                             a regression run's target)
    configs/inference.json   preprocessing, network, inferer, postprocessing, ``run``
    models/model.ts          the network as TorchScript
    docs/README.md           how to run it

``python -m monai.bundle run --bundle_root B --config_file B/configs/inference.json
--meta_file B/configs/metadata.json --dataset_dir IMAGES --output_dir OUT`` writes one
mask per NIfTI file (segmentation) or a ``predictions.csv`` (classification: class
probabilities; regression: the network's output, as ``medxfer predict`` writes it). The
``$``-expressions in the config are MONAI's bundle syntax, evaluated by MONAI when the
bundle runs; medxfer itself never evaluates a config.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from medxfer import __version__
from medxfer.io import atomic_write_text
from medxfer.tasks import task_of
from medxfer.tasks.segmentation.inference import window_size
from medxfer.workflows.export.bundle_transforms import preprocessing
from medxfer.workflows.export.common import OutputCheck, size_divisor
from medxfer.workflows.export.torchscript import export_torchscript

INFERENCE_CONFIG = "configs/inference.json"
METADATA = "configs/metadata.json"


def _inferer(loaded: Any) -> tuple[dict[str, Any], bool]:
    """The inferer config and whether it slides windows (as medxfer's inference does)."""
    config = loaded.config
    if not task_of(config).labels_are_masks:  # one output per image
        return {"_target_": "SimpleInferer"}, False
    dims = int(loaded.sidecar["spatial_dims"])
    roi = window_size(config, [1] * dims, size_divisor(loaded))
    if roi is None:
        return {"_target_": "SimpleInferer"}, False
    sw = config.eval.sliding_window
    return {"_target_": "SlidingWindowInferer", "roi_size": roi, "sw_batch_size": sw.batch_size,
            "overlap": sw.overlap, "mode": sw.mode, "progress": False}, True


def _image_postprocessing(loaded: Any) -> list[dict[str, Any]]:
    """The postprocessing transforms of a classification or regression bundle.

    Classification turns logits into class probabilities; a regression network's output is
    the prediction itself (``medxfer predict`` writes it unchanged), so nothing is applied.
    """
    if task_of(loaded.config).labels_are_values:
        return []
    return [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]


def inference_config(loaded: Any) -> dict[str, Any]:
    """The ``configs/inference.json`` of the run's bundle."""
    segmentation = task_of(loaded.config).labels_are_masks  # masks, else a CSV row per image
    inferer, windows = _inferer(loaded)
    pad = size_divisor(loaded) if segmentation and not windows else None
    dims = int(loaded.sidecar["spatial_dims"])
    pattern = "*.nii*" if dims == 3 else "*.png"
    cfg: dict[str, Any] = {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/images'",
        "image_pattern": pattern,
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, @image_pattern))))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'), "
                       "map_location='cpu')",
        "network": "$@network_def.to(@device).eval()",
        "preprocessing": {"_target_": "Compose",
                          "transforms": preprocessing(loaded, pad_to=pad)},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "inferer": inferer,
    }
    if segmentation:
        cfg["postprocessing"] = {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing",
             "orig_keys": "image", "nearest_interp": True, "to_tensor": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir",
             "output_postfix": "seg", "output_dtype": "$numpy.uint8", "resample": False,
             "separate_folder": False, "print_log": False},
        ]}
        cfg["predict"] = ("$torch.no_grad()(lambda d: @postprocessing({**d, 'pred': "
                          "@inferer(d['image'][None].to(@device), @network)[0].cpu()}))")
        cfg["run"] = ["$[@predict(d) for d in @dataset]"]
    else:
        cfg["postprocessing"] = {"_target_": "Compose",
                                 "transforms": _image_postprocessing(loaded)}
        cfg["saver"] = {"_target_": "CSVSaver", "output_dir": "@output_dir",
                        "filename": "predictions.csv", "overwrite": False}
        cfg["predict"] = ("$torch.no_grad()(lambda d: @postprocessing({**d, 'pred': "
                          "@network(d['image'][None].to(@device))[0].cpu()}))")
        cfg["run"] = ["$[@saver.save(@predict(d)['pred'], d['image'].meta) for d in @dataset]",
                      "$@saver.finalize()"]
    return cfg


def metadata(loaded: Any, check: OutputCheck) -> dict[str, Any]:
    """The ``configs/metadata.json`` of the run's bundle."""
    import monai
    import numpy
    import torch

    sidecar, config = loaded.sidecar, loaded.config
    dims = int(sidecar["spatial_dims"])
    spatial = ["*"] * dims
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
                  "0.8.1/meta_schema_20220324.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by medxfer {__version__} from a medxfer run"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"nibabel": _version("nibabel")},
        "name": f"medxfer {config.task} ({config.model.backbone.name})",
        "task": f"{config.task} with a {config.model.backbone.name} network fine-tuned by medxfer",
        "description": "Exported from a medxfer run; preprocessing, inferer and network "
                       "reproduce `medxfer predict`.",
        "authors": "medxfer",
        "copyright": "see the data and weights the run was trained on",
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
                    "size_divisor": size_divisor(loaded), "check": check.as_dict()},
    }


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


README = """# medxfer {task} bundle

Exported by `medxfer export --format monai-bundle`; needs MONAI, PyTorch and nibabel only.

```bash
python -m monai.bundle run --bundle_root BUNDLE \\
    --config_file BUNDLE/configs/inference.json --meta_file BUNDLE/configs/metadata.json \\
    --dataset_dir IMAGES --output_dir OUT
```

where `BUNDLE` is this folder (wherever it now is), `IMAGES` a folder of the images to
predict and `OUT` a new folder for the results.

{what}
"""


def export_bundle(loaded: Any, folder: Path) -> tuple[list[Path], OutputCheck]:
    """Write the bundle of ``loaded`` into ``folder`` (exists, empty).

    Returns:
        The files written and the output check of ``models/model.ts``.

    Raises:
        ExportError: when the run cannot be expressed as a bundle or the TorchScript model
            does not reproduce medxfer's logits.
    """
    folder = Path(folder)
    cfg = inference_config(loaded)  # raises before any file is written
    (folder / "models").mkdir(parents=True, exist_ok=True)
    model_path, check = export_torchscript(loaded, folder / "models", fmt="monai-bundle")
    atomic_write_text(folder / INFERENCE_CONFIG, json.dumps(cfg, indent=2) + "\n")
    atomic_write_text(folder / METADATA, json.dumps(metadata(loaded, check), indent=2) + "\n")
    task = task_of(loaded.config)
    if task.labels_are_masks:
        what = ("Writes `<name>_seg.nii.gz` (class indices, on the input's grid) per image "
                "matching `image_pattern` in `dataset_dir`.")
    elif task.labels_are_values:
        what = ("Writes `predictions.csv` (one predicted value of "
                f"`{loaded.target_name}` per image) for the images in `dataset_dir`.")
    else:
        what = ("Writes `predictions.csv` (class probabilities) for the images in `dataset_dir`. "
                "A binary run's decision, as `medxfer predict` makes it, is class 1 when its "
                "probability is at least `decision.threshold` in `export.json`.")
    if not task.labels_are_masks:
        columns = csv_columns(loaded)
        what += ("\n\n`predictions.csv` has no header row (MONAI's `CSVSaver` writes none); "
                 f"its {len(columns)} columns are, in order: "
                 f"{', '.join(f'`{c}`' for c in columns)} "
                 "(also in `configs/metadata.json`, `medxfer.predictions_csv_columns`).")
    atomic_write_text(folder / "docs" / "README.md", README.format(task=loaded.config.task,
                                                                   what=what))
    return [model_path, folder / INFERENCE_CONFIG, folder / METADATA,
            folder / "docs" / "README.md"], check
