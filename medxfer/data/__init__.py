"""Readers, datalists, splits, MONAI transform presets and datasets."""
