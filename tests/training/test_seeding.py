"""Seeding: the deterministic-algorithms warning is shown once per run."""

from __future__ import annotations

import uuid
import warnings

import torch

from medxfer.training.seeding import seed_everything


def test_a_missing_deterministic_implementation_warns_once(recwarn):
    # the text torch's C++ warning has (e.g. CUDA's nll_loss2d), made unique per test run
    # because "once" is remembered for the whole process
    text = (f"op_{uuid.uuid4().hex} does not have a deterministic implementation, but you "
            "set 'torch.use_deterministic_algorithms(True, warn_only=True)'.")
    seed_everything(0, deterministic=True)
    try:
        for _ in range(3):  # three training steps, each changing the filters in between
            warnings.warn(text, UserWarning)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
        assert [str(w.message) for w in recwarn].count(text) == 1
    finally:
        torch.use_deterministic_algorithms(False)
