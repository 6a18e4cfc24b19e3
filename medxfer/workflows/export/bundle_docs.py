"""The bundle's ``docs/README.md`` and ``LICENSE``."""

from __future__ import annotations

from typing import Any

from medxfer import __version__
from medxfer.tasks import task_of
from medxfer.workflows.export.bundle_network import NetworkDefinition

README = """# medxfer {task} bundle

Exported by `medxfer export --format monai-bundle` from a medxfer run; runs with MONAI,
PyTorch and nibabel only (no medxfer, no pytorch-ignite).

## Inference

```bash
python -m monai.bundle run --bundle_root BUNDLE \\
    --config_file BUNDLE/configs/inference.json --meta_file BUNDLE/configs/metadata.json \\
    --dataset_dir IMAGES --output_dir OUT
```

where `BUNDLE` is this folder (wherever it now is), `IMAGES` a folder of the images to
predict and `OUT` a new folder for the results. From Python:

```python
from monai.bundle import ConfigWorkflow

workflow = ConfigWorkflow(config_file="BUNDLE/configs/inference.json",
                          meta_file="BUNDLE/configs/metadata.json",
                          logging_file="BUNDLE/configs/logging.conf", workflow_type="infer",
                          bundle_root="BUNDLE", dataset_dir="IMAGES", output_dir="OUT")
workflow.initialize()
workflow.run()
workflow.finalize()
```

{what}

## The network

{network}

The weights are `models/model.pt`, a state dict (`torch.load(path, weights_only=True)`)
of `network_def`; `models/model.ts` is the same network as TorchScript. `evaluator` is a
plain object with the attributes of MONAI's `SupervisedEvaluator` (`network`, `inferer`,
`postprocessing`) and its `run()`, so that no pytorch-ignite is needed.

## Fine-tuning

```bash
python -m monai.bundle run --bundle_root BUNDLE \\
    --config_file BUNDLE/configs/train.json --meta_file BUNDLE/configs/metadata.json \\
    --dataset_dir DATA --train#trainer#max_epochs 5
```

trains `models/model.pt` further on the cases listed under `training` in
`DATA/dataset.json` (MONAI's Decathlon datalist format, paths relative to `DATA`{labels})
with {loss} and AdamW at a tenth of the run's learning rate (`--learning_rate` changes it)
for as many epochs as the run trained (`--train#trainer#max_epochs` changes it), and writes the weights to `models/model_finetuned.pt`; predict with them by adding
`--ckpt_path BUNDLE/models/model_finetuned.pt` to the inference command. {finetune_note}

## Licence

See `LICENSE`: the configs and this README are Apache-2.0; the weights' licence follows
the data they were trained on and the weights they started from.
"""

LICENSE = """This bundle has two parts with different licences.

1. Code and configuration (configs/, docs/README.md), written by medxfer {version}:
   Apache License, Version 2.0, as medxfer itself
   (https://www.apache.org/licenses/LICENSE-2.0).

2. Trained weights (models/model.pt, models/model.ts): medxfer does not know their
   licence and grants none. Weights learnt from data carry the terms of that data and of
   any weights they started from:
   - training data: {data}
   - starting weights: {start}
   Check those terms before you share or use the weights. Not for clinical use unless
   validated and approved for it.
"""


def readme(loaded: Any, network: NetworkDefinition, columns: list[str] | None) -> str:
    """``docs/README.md``: how to run the bundle, what it writes, how to fine-tune it."""
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
    if columns:
        what += ("\n\n`predictions.csv` has no header row (MONAI's `CSVSaver` writes none); "
                 f"its {len(columns)} columns are, in order: "
                 f"{', '.join(f'`{c}`' for c in columns)} "
                 "(also in `configs/metadata.json`, `medxfer.predictions_csv_columns`).")
    if network.target is not None:
        described = (f"`network_def` is `{network.target}`, built by MONAI from its "
                     "arguments in `configs/inference.json`.")
        note = ""
    else:
        described = ("`network_def` loads the TorchScript model `models/model.ts`: "
                     f"{network.fallback_reason}.")
        note = ("The TorchScript network trains with its layers as they were traced, in "
                "evaluation mode (batch-norm statistics frozen, no dropout).")
    if task.labels_are_masks:
        labels, loss = ", `label` a mask of class indices", "Dice + cross-entropy"
    elif task.labels_are_values:
        labels, loss = ", `label` the target value", "mean squared error"
    else:
        labels, loss = ", `label` the class index", "cross-entropy"
    return README.format(task=loaded.config.task, what=what, network=described,
                         labels=labels, loss=loss, finetune_note=note).replace(" \n", "\n")


def licence(loaded: Any, data: str) -> str:
    """``LICENSE``: Apache-2.0 for the code parts; the weights' terms follow their sources
    (``data``: the run's training data, as its summary describes it)."""
    config = loaded.config
    if config.strategy.name == "scratch":
        start = "none (trained from random initialisation)"
    else:
        pretrained = config.model.backbone.kwargs.get("pretrained", "none")
        start = ("none (trained from random initialisation)" if str(pretrained) == "none"
                 else f"{pretrained!s} (model.backbone.pretrained of the run)")
    return LICENSE.format(version=__version__, data=data, start=start)
