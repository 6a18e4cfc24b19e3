"""Binary decisions of a classifier: the threshold chosen on validation and how it is applied."""

from __future__ import annotations

import numpy as np

from medxfer import metrics as M
from medxfer.config import RunConfig

#: Bins of the expected calibration error, in reports and ensembles alike.
ECE_BINS = 15


def choose_threshold(config: RunConfig, y_val: np.ndarray, p_val: np.ndarray) -> float | None:
    """The binary decision threshold by ``eval.threshold`` from validation labels and
    probabilities (``None`` for more than two classes; 0.5 when validation holds one class)."""
    if p_val.ndim != 2 or p_val.shape[1] != 2:
        return None
    if config.eval.threshold == "fixed":
        return config.eval.fixed_threshold
    if len(np.unique(y_val)) < 2:
        return 0.5
    return float(M.choose_threshold(y_val.astype(int), p_val, config.eval.threshold))


def decide(scores: np.ndarray, threshold: float | None) -> np.ndarray:
    """Class indices: ``scores[:, 1] >= threshold`` for a binary threshold, else argmax."""
    if threshold is not None and scores.shape[1] == 2:
        return (scores[:, 1] >= threshold).astype(int)
    return scores.argmax(axis=1)


def threshold_source(config: RunConfig) -> str:
    """How the threshold was chosen, for summaries."""
    return "fixed" if config.eval.threshold == "fixed" else f"{config.eval.threshold} on validation"
