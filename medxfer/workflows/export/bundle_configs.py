"""The bundle's configs: ``inference.json``, ``train.json`` and ``logging.conf``.

Both JSON configs define the standard properties MONAI's ``ConfigWorkflow`` checks
(:mod:`monai.bundle.properties`: ``bundle_root``, ``device``, ``dataset_dir``, ``dataset``,
``evaluator``, ``network_def``, ``inferer``, ``preprocessing``, ``postprocessing`` for
inference; ``train#trainer``, ``train#trainer#max_epochs``, ``train#dataset``,
``train#inferer`` for training). MONAI's engines (``SupervisedEvaluator``,
``SupervisedTrainer``) need pytorch-ignite; so that a bundle runs with MONAI, PyTorch and
nibabel alone, ``evaluator`` and ``train#trainer`` are plain objects with the engines'
``run()`` written as config expressions. The ``$``-expressions are MONAI's bundle syntax,
evaluated by MONAI when the bundle runs; medxfer itself never evaluates a config.
"""

from __future__ import annotations

from typing import Any

from medxfer.tasks import task_of
from medxfer.tasks.segmentation.inference import window_size
from medxfer.workflows.export.bundle_network import NetworkDefinition
from medxfer.workflows.export.bundle_transforms import preprocessing
from medxfer.workflows.export.common import size_divisor

IMPORTS = ["$import glob", "$import logging", "$import os", "$import types", "$import numpy",
           "$import torch", "$import monai"]
#: Fine-tuning starts from trained weights: a tenth of the run's learning rate.
FINETUNE_LR_FACTOR = 0.1

#: Python's logging configuration, as MONAI's model-zoo bundles have it (only the standard
#: library's handlers and literal arguments, which MONAI's logging-file check accepts).
LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""


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


def _common(loaded: Any, network: NetworkDefinition) -> dict[str, Any]:
    """What both configs start with: where things are, the device and the network."""
    dims = int(loaded.sidecar["spatial_dims"])
    return {
        "imports": list(IMPORTS),
        "bundle_root": ".",
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/images'",
        "image_pattern": "*.nii*" if dims == 3 else "*.png",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": network.config,
        "network": "$@network_def.to(@device)",
        "load_weights": "$@network.load_state_dict(torch.load(@ckpt_path, map_location=@device, "
                        "weights_only=True))",
    }


def inference_config(loaded: Any, network: NetworkDefinition) -> dict[str, Any]:
    """The ``configs/inference.json`` of the run's bundle."""
    segmentation = task_of(loaded.config).labels_are_masks  # masks, else a CSV row per image
    inferer, windows = _inferer(loaded)
    pad = size_divisor(loaded) if segmentation and not windows else None
    cfg = _common(loaded, network)
    cfg.update({
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, @image_pattern))))",
        "preprocessing": {"_target_": "Compose",
                          "transforms": preprocessing(loaded, pad_to=pad)},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "inferer": inferer,
    })
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
        each = "$lambda: [@predict(d) for d in @dataset]"
        finish = "$lambda: None"
    else:
        cfg["postprocessing"] = {"_target_": "Compose",
                                 "transforms": _image_postprocessing(loaded)}
        cfg["saver"] = {"_target_": "CSVSaver", "output_dir": "@output_dir",
                        "filename": "predictions.csv", "overwrite": False}
        cfg["predict"] = ("$torch.no_grad()(lambda d: @postprocessing({**d, 'pred': "
                          "@inferer(d['image'][None].to(@device), @network)[0].cpu()}))")
        each = "$lambda: [@saver.save(@predict(d)['pred'], d['image'].meta) for d in @dataset]"
        finish = "$lambda: @saver.finalize()"
    # MONAI's SupervisedEvaluator has these attributes and run(); this one needs no ignite
    cfg["evaluator"] = {"_target_": "types.SimpleNamespace", "network": "@network",
                        "inferer": "@inferer", "postprocessing": "@postprocessing",
                        "dataset": "@dataset", "predict_all": each, "finish": finish,
                        "run": "$lambda: (@evaluator#predict_all(), @evaluator#finish())"}
    cfg["initialize"] = ["$@load_weights", "$@network.eval()"]
    cfg["run"] = ["$@evaluator.run()"]
    return cfg


def _train_loss(loaded: Any) -> tuple[dict[str, Any], str]:
    """The training loss and how a batch's label becomes its target."""
    task, config = task_of(loaded.config), loaded.config
    if task.labels_are_masks:
        return ({"_target_": "DiceCELoss", "to_onehot_y": True, "softmax": True,
                 "include_background": bool(config.loss.include_background)},
                "b['label'].to(@device)")
    if task.labels_are_values:
        return ({"_target_": "torch.nn.MSELoss"},
                "b['label'].float().reshape(-1, 1).to(@device)")
    return ({"_target_": "torch.nn.CrossEntropyLoss"},
            "b['label'].long().reshape(-1).to(@device)")


def _train_sampling(loaded: Any) -> tuple[list[dict[str, Any]], int, bool]:
    """Random patch transforms, the batch size, and whether whole images are padded."""
    config = loaded.config
    patch = config.data.patch
    if task_of(config).labels_are_masks and patch.size:
        keys = ["image", "label"]
        return ([{"_target_": "SpatialPadd", "keys": keys, "spatial_size": list(patch.size)},
                 {"_target_": "RandCropByPosNegLabeld", "keys": keys, "label_key": "label",
                  "spatial_size": list(patch.size), "pos": float(patch.pos_fraction),
                  "neg": float(1 - patch.pos_fraction), "num_samples": patch.samples_per_case,
                  "allow_smaller": False}],
                max(1, config.train.batch_size // patch.samples_per_case), False)
    if task_of(config).labels_are_masks:  # whole images of different sizes: one at a time
        return [], 1, True
    return [], config.train.batch_size, False


def train_config(loaded: Any, network: NetworkDefinition) -> dict[str, Any]:
    """The ``configs/train.json`` of the run's bundle: fine-tunes ``models/model.pt`` on the
    labelled cases of ``dataset_dir/dataset.json`` (MONAI's Decathlon datalist format) and
    writes the fine-tuned weights to ``models/model_finetuned.pt``."""
    config = loaded.config
    segmentation = task_of(config).labels_are_masks
    sampling, batch, pad = _train_sampling(loaded)
    loss, target = _train_loss(loaded)
    cfg = _common(loaded, network)
    del cfg["image_pattern"], cfg["output_dir"]
    cfg.update({
        "finetuned_path": "$@bundle_root + '/models/model_finetuned.pt'",
        "learning_rate": float(config.train.optimizer.lr) * FINETUNE_LR_FACTOR,
        "datalist_file": "$os.path.join(@dataset_dir, 'dataset.json')",
        "logger": "$logging.getLogger('bundle.train')",
        "train": {
            "datalist": f"$monai.data.load_decathlon_datalist(@datalist_file, "
                        f"{segmentation}, 'training', @dataset_dir)",
            "preprocessing": {"_target_": "Compose", "transforms": [
                *preprocessing(loaded, pad_to=size_divisor(loaded) if pad else None,
                               mask=segmentation),
                *sampling]},
            "dataset": {"_target_": "Dataset", "data": "@train#datalist",
                        "transform": "@train#preprocessing"},
            "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset",
                           "batch_size": batch, "shuffle": True, "num_workers": 0},
            "inferer": {"_target_": "SimpleInferer"},
            "loss": loss,
            "optimizer": {"_target_": "torch.optim.AdamW", "params": "$@network.parameters()",
                          "lr": "@learning_rate"},
            "update": "$lambda loss: (@train#optimizer.zero_grad(), loss.backward(), "
                      "@train#optimizer.step(), loss.item())[-1]",
            "step": f"$lambda b: @train#update(@train#loss(@train#inferer("
                    f"b['image'].to(@device), @network), {target}))",
            "epoch": "$lambda e: @logger.info('epoch %d/%d: mean loss %.4f', e + 1, "
                     "@train#trainer#max_epochs, numpy.mean([@train#step(b) for b in "
                     "@train#dataloader]))",
            # MONAI's SupervisedTrainer has max_epochs and run(); this one needs no ignite
            "trainer": {"_target_": "types.SimpleNamespace",
                        "max_epochs": int(config.train.epochs),
                        "network": "@network", "run": "$lambda: (@network.train(), "
                        "[@train#epoch(e) for e in range(@train#trainer#max_epochs)], "
                        "torch.save(@network.state_dict(), @finetuned_path))"},
        },
        "initialize": ["$@load_weights"],
        "run": ["$@train#trainer.run()"],
    })
    return cfg
