"""Whole-image segmentation inference: MONAI sliding windows over padded images.

Validation, test evaluation, ``medxfer predict`` and the inference benchmark all go
through :func:`make_inferer` and :func:`predict_probabilities`, so a model is evaluated the
same way everywhere.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import nn

from medxfer.config import RunConfig
from medxfer.errors import ConfigError, InputSizeError
from medxfer.progress import announced
from medxfer.training.amp import Precision
from medxfer.training.compiling import begin_step


def round_up(size: Sequence[int], divisor: int) -> list[int]:
    """Each side rounded up to a multiple of ``divisor``."""
    d = max(int(divisor), 1)
    return [((int(s) + d - 1) // d) * d for s in size]


def window_hint(config: RunConfig) -> str:
    """What to change when the network refuses the size of ``eval.sliding_window.roi_size``
    windows."""
    return (f"eval.sliding_window.roi_size {list(config.eval.sliding_window.roi_size or [])} "
            "sets the windows of validation, test and predict; set a larger one, or leave it "
            "out to use data.patch.size")


def window_size(config: RunConfig, image_size: Sequence[int], divisor: int) -> list[int] | None:
    """The sliding-window size: ``eval.sliding_window.roi_size``, else the training patch;
    ``None`` (one pass over the whole padded image) when neither is set. Rounded up to the
    network's ``size_divisor``."""
    roi = config.eval.sliding_window.roi_size or config.data.patch.size
    if not roi:
        return None
    if len(roi) != len(image_size):
        raise ConfigError(f"eval.sliding_window.roi_size {list(roi)} needs {len(image_size)} "
                          f"values for {len(image_size)}D images")
    return round_up(roi, divisor)


class _PaddedNet(nn.Module):
    """Pads its input to a multiple of ``divisor`` and crops the logits back."""

    def __init__(self, net: nn.Module, divisor: int) -> None:
        super().__init__()
        self.net = net
        self.divisor = max(int(divisor), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = list(x.shape[2:])
        target = round_up(spatial, self.divisor)
        if target == spatial:
            return self.net(x)
        pad: list[int] = []
        for s, t in zip(reversed(spatial), reversed(target)):
            pad += [0, t - s]
        out = self.net(nn.functional.pad(x, pad))
        index = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
        return out[index]


def make_inferer(config: RunConfig) -> Any:
    """A MONAI ``SlidingWindowInferer`` configured by ``eval.sliding_window``."""
    from monai.inferers import SlidingWindowInferer

    sw = config.eval.sliding_window
    # roi_size is set per image in predict_probabilities (it may depend on the image size).
    return SlidingWindowInferer(roi_size=[1], sw_batch_size=sw.batch_size, overlap=sw.overlap,
                                mode=sw.mode, progress=False)


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: torch.Tensor, config: RunConfig, *,
                          device: torch.device, precision: Precision,
                          inferer: Any | None = None) -> torch.Tensor:
    """Softmax probabilities ``[N, C, *spatial]`` for images ``[N, C_in, *spatial]``.

    With a window size (see :func:`window_size`), MONAI's sliding-window inference runs
    over the image (windows padded to the network's ``size_divisor``); otherwise the whole
    image goes through the network at once, padded and cropped back. The model is used in
    its current mode (call ``model.eval()`` first).
    """
    model_dims = int(getattr(model, "spatial_dims", images.ndim - 2))
    if images.ndim - 2 == 3 and model_dims == 2:
        return _predict_by_slices(model, images, config, device=device, precision=precision,
                                  inferer=inferer)
    divisor = int(getattr(model, "size_divisor", 1))
    spatial = list(images.shape[2:])
    roi = window_size(config, spatial, divisor)
    net = _PaddedNet(model, divisor)
    images = images.to(device, non_blocking=True)
    begin_step(model)  # train.compile: cudagraphs
    with precision.autocast():
        if roi is None:
            logits = net(images)
        else:
            inferer = inferer or make_inferer(config)
            inferer.roi_size = roi
            try:
                logits = inferer(images, net)
            except InputSizeError as exc:
                if not config.eval.sliding_window.roi_size:
                    raise  # the training patch's size: the network's own hint says so
                raise exc.with_hint(window_hint(config)) from None
    return torch.softmax(logits.float(), dim=1)


def _predict_by_slices(model: nn.Module, volumes: torch.Tensor, config: RunConfig, *,
                       device: torch.device, precision: Precision,
                       inferer: Any | None) -> torch.Tensor:
    """A 2D network over every slice of ``[N, C, X, Y, Z]`` along ``data.slice_axis``."""
    axis = config.data.slice_axis if config.data.slice_axis is not None else 2
    chunk = max(config.eval.sliding_window.batch_size, 1) * 8
    outputs = []
    for volume in volumes:
        slices = volume.movedim(1 + axis, 0)  # [D, C, a, b]
        probs = torch.cat([predict_probabilities(model, slices[i:i + chunk], config,
                                                 device=device, precision=precision,
                                                 inferer=inferer).cpu()
                           for i in range(0, slices.shape[0], chunk)])
        outputs.append(probs.movedim(0, 1 + axis))  # [K, X, Y, Z]
    return torch.stack(outputs)


def iter_case_predictions(model: nn.Module, dataset: Any, config: RunConfig, *,
                          device: torch.device, precision: Precision
                          ) -> Iterator[tuple[dict[str, Any], torch.Tensor]]:
    """For each item of ``dataset`` (in order): ``(item, probabilities [C, *spatial] on CPU)``.

    Items are ``{"image": [C_in, *spatial], "label": [1, *spatial], "id": ...}``; images
    are processed one at a time because their sizes may differ. The model is put in
    evaluation mode and restored afterwards. Inside a run a slow pass reports its progress
    (:func:`medxfer.progress.announced`).
    """
    was_training = model.training
    model.eval()
    inferer = make_inferer(config)
    try:
        # Sliding windows over volumes can take minutes: a run's log says how far it is.
        with announced(f"predicting {len(dataset)} cases", len(dataset)) as advance:
            for index in range(len(dataset)):
                item = dataset[index]
                probs = predict_probabilities(model, item["image"][None], config,
                                              device=device, precision=precision,
                                              inferer=inferer)
                yield item, probs[0].cpu()
                advance()
    finally:
        model.train(was_training)
