"""Names the segmentation backbone plugins register and look weights up under; kept apart
from the network-building modules so that registration imports no torch."""

from __future__ import annotations

#: medxfer's smp backbone names and the segmentation-models-pytorch classes they build.
ARCHITECTURES = {"unet": "Unet", "unetplusplus": "UnetPlusPlus", "fpn": "FPN",
                 "deeplabv3plus": "DeepLabV3Plus"}


def medicalnet_file_names(depth: int) -> tuple[str, ...]:
    """The names MedicalNet's ResNet-``depth`` weights are looked for under."""
    return (f"resnet_{depth}_23dataset.pth", f"resnet_{depth}.pth")
