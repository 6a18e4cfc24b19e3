"""medxfer's whole-volume segmentation inference against a direct MONAI call, in one process.

Both sides run the same 3D network (same weights, eval mode, no gradients) over the same
pre-loaded Hippocampus volumes (``../shared/data/msd_hippocampus`` when present, else the
embedded 3D sample data): medxfer through :func:`medxfer.tasks.segmentation.inference.
predict_probabilities` (as validation, test evaluation and ``medxfer predict`` call it,
one volume at a time), the reference through ``monai.inferers.sliding_window_inference``
with the same window size, overlap, blending mode and window batch, followed by the same
softmax. The two are timed alternately several times and the median ratio is printed,
with the largest difference between their outputs.

The network is the ``monai_unet`` plugin when one is registered, else a MONAI ``UNet``.

Usage::

    python benchmarks/inference_overhead.py [--volumes 16] [--repeats 8] [--roi 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medxfer.config import RunConfig
from medxfer.training.amp import Precision, resolve_device
from medxfer.tasks.segmentation.inference import predict_probabilities

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "msd_hippocampus"


def load_volumes(count: int) -> tuple[list[torch.Tensor], str]:
    """Up to ``count`` z-scored volumes ``[1, 1, X, Y, Z]`` and where they came from."""
    import nibabel as nib

    from medxfer.data.sample import ensure_sample_data

    folder = SHARED if SHARED.is_dir() else ensure_sample_data("segmentation_3d")
    files = sorted((folder / "imagesTr").glob("*.nii*"))[:count]
    volumes = []
    for path in files:
        data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        data = (data - data.mean()) / max(float(data.std()), 1e-6)
        volumes.append(torch.from_numpy(data)[None, None].contiguous())
    return volumes, f"{len(volumes)} volumes from {folder}"


def make_network(classes: int) -> tuple[nn.Module, str]:
    """The ``monai_unet`` plugin's network when registered, else a MONAI UNet."""
    from medxfer.plugins import build_registries

    registries = build_registries()
    if "monai_unet" in [e.name for e in registries.backbone.entries()]:
        from medxfer.models import build_segmentation_network

        model = registries.backbone.create("monai_unet", key="model.backbone", in_channels=1,
                                           spatial_dims=3, num_classes=classes,
                                           pretrained="none")
        return build_segmentation_network(model), "monai_unet plugin"
    from monai.networks.nets import UNet

    net = UNet(spatial_dims=3, in_channels=1, out_channels=classes, channels=(16, 32, 64, 128),
               strides=(2, 2, 2), num_res_units=2)
    return net, "monai.networks.nets.UNet(16, 32, 64, 128)"


def medxfer_pass(model: nn.Module, volumes: list[torch.Tensor], config: RunConfig,
                 device: torch.device) -> tuple[float, list[torch.Tensor]]:
    """medxfer's inference over every volume; (seconds, probabilities)."""
    precision = Precision(None, device.type)
    outputs = []
    sync(device)
    tic = time.perf_counter()
    for volume in volumes:
        outputs.append(predict_probabilities(model, volume, config, device=device,
                                             precision=precision))
    sync(device)
    return time.perf_counter() - tic, outputs


@torch.no_grad()
def monai_pass(model: nn.Module, volumes: list[torch.Tensor], config: RunConfig,
               roi: list[int], device: torch.device) -> tuple[float, list[torch.Tensor]]:
    """The reference: ``sliding_window_inference`` + softmax; (seconds, probabilities)."""
    from monai.inferers import sliding_window_inference

    sw = config.eval.sliding_window
    outputs = []
    sync(device)
    tic = time.perf_counter()
    for volume in volumes:
        logits = sliding_window_inference(volume.to(device, non_blocking=True), roi,
                                          sw.batch_size, model, overlap=sw.overlap,
                                          mode=sw.mode)
        outputs.append(torch.softmax(logits.float(), dim=1))
    sync(device)
    return time.perf_counter() - tic, outputs


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (timings must include it)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    """Time both sides alternately and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--roi", type=int, default=32, help="cubic window side")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--mode", choices=["gaussian", "constant"], default="gaussian")
    parser.add_argument("--sw-batch", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    roi = [args.roi] * 3
    config = RunConfig.model_validate({"task": "segmentation", "eval": {"sliding_window": {
        "roi_size": roi, "overlap": args.overlap, "mode": args.mode,
        "batch_size": args.sw_batch}}})
    volumes, source = load_volumes(args.volumes)
    model, described = make_network(3)
    model.to(device).eval()
    divisor = int(getattr(model, "size_divisor", 1))
    ref_roi = [((r + divisor - 1) // divisor) * divisor for r in roi]  # as medxfer rounds it
    _, ours_out = medxfer_pass(model, volumes[:2], config, device)  # warm-up
    _, ref_out = monai_pass(model, volumes[:2], config, ref_roi, device)
    diff = max(float((a.cpu() - b.cpu()).abs().max()) for a, b in zip(ours_out, ref_out))
    ours, ref = [], []
    for i in range(args.repeats):  # alternate which side goes first: the machine's speed drifts
        if i % 2:
            ours.append(medxfer_pass(model, volumes, config, device)[0])
            ref.append(monai_pass(model, volumes, config, ref_roi, device)[0])
        else:
            ref.append(monai_pass(model, volumes, config, ref_roi, device)[0])
            ours.append(medxfer_pass(model, volumes, config, device)[0])
    ratio = statistics.median(ours) / statistics.median(ref)
    best = min(ours) / min(ref)
    shapes = sorted({tuple(v.shape[2:]) for v in volumes})
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}")
    print(f"{source}; shapes {shapes[0]} .. {shapes[-1]}")
    print(f"network {described}; roi {ref_roi}, overlap {args.overlap}, mode {args.mode}, "
          f"sw_batch_size {args.sw_batch}, fp32")
    print(f"max |probability difference| medxfer vs MONAI: {diff:.2e}")
    print(f"MONAI direct median {statistics.median(ref):.3f} s   best {min(ref):.3f} s")
    print(f"medxfer      median {statistics.median(ours):.3f} s   best {min(ours):.3f} s")
    print(f"ratio medxfer/MONAI: median {ratio:.3f}, best {best:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
