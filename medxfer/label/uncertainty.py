"""How unsure a served segmentation model is about an image: the active-learning score.

The score is the entropy of the model's softmax probabilities, divided by ``log(C)`` so
it lies in ``[0, 1]``, averaged over the voxels where the model gives the foreground
classes together at least :data:`REGION` probability (the structure and its uncertain
border; averaging over the whole image would let the background decide). An image where
the model finds no such voxel scores 1: the model sees nothing it knows there, which is
worth a label as much as a doubtful border. Higher means label this image first.

The image goes through the run's own preprocessing and inference (sliding window where
the run uses one), as for serving, but the probabilities stay on the preprocessed grid:
no inversion is needed for a single number.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from medxfer.data import inference_transform
from medxfer.tasks.segmentation.inference import predict_probabilities
from medxfer.training.amp import resolve_precision

#: Foreground probability from which a voxel counts towards the score.
REGION = 0.05


def entropy_score(probs: torch.Tensor) -> float:
    """The score of softmax probabilities ``[C, *spatial]`` (see the module docstring)."""
    probs = probs.float().clamp_min(1e-12)
    classes = probs.shape[0]
    entropy = -(probs * probs.log()).sum(dim=0) / math.log(classes)
    region = (1.0 - probs[0]) >= REGION
    if not bool(region.any()):
        return 1.0
    return float(entropy[region].mean().clamp(0.0, 1.0))


@torch.no_grad()
def image_uncertainty(loaded: Any, image: str | Path) -> float:
    """The served run ``loaded``'s uncertainty score for ``image``.

    Args:
        loaded: A segmentation run from :func:`medxfer.workflows.predict.load_run`.
        image: An image file (or DICOM folder) the run can read.

    Raises:
        DataError: when the image cannot be read or does not fit the model.
    """
    sidecar = loaded.sidecar
    transform = inference_transform(loaded.config,
                                    imagenet_norm=bool(sidecar.get("imagenet_norm", False)),
                                    spatial_dims=3 if loaded.config.data.slice_axis is not None
                                    else int(sidecar["spatial_dims"]),
                                    in_channels=int(sidecar["in_channels"]))
    device = next(loaded.model.parameters()).device
    x = transform(image)[None]
    precision = resolve_precision(loaded.config.train.amp if device.type == "cuda" else "off",
                                  device)
    probs = predict_probabilities(loaded.model, x, loaded.config, device=device,
                                  precision=precision)
    return entropy_score(probs[0].cpu())
