"""Readers, datalists, splits, MONAI transform presets and datasets.

The trainer's front door is :func:`load_data` (a :class:`DataBundle` of train/val/test
datasets) and :func:`inference_transform` (one file to one preprocessed tensor).
"""

from medxfer.data.augment import PRESETS as AUGMENT_PRESETS
from medxfer.data.augment import build_augmentation, list_ops
from medxfer.data.datalist import Datalist
from medxfer.data.layouts import build_datalist, detect_format
from medxfer.data.loading import DataBundle, inference_transform, load_data, load_datalist
from medxfer.data.medmnist import MedMNISTData, load_medmnist
from medxfer.data.readers import (
                                  ImageData,
                                  check_same_geometry,
                                  list_dicom_series,
                                  read_dicom_series,
                                  read_image,
)
from medxfer.data.sample import ensure_sample_data, generate_sample_data
from medxfer.data.splits import assign_splits, split_fractions, split_kfold

__all__ = [
    "AUGMENT_PRESETS", "DataBundle", "Datalist", "ImageData", "MedMNISTData",
    "assign_splits", "build_augmentation", "build_datalist", "check_same_geometry",
    "detect_format", "ensure_sample_data", "generate_sample_data", "inference_transform",
    "list_dicom_series", "list_ops", "load_data", "load_datalist", "load_medmnist",
    "read_dicom_series", "read_image", "split_fractions", "split_kfold",
]
