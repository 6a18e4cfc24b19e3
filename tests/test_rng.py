"""NumPy random states packed for checkpoints, and older checkpoints' form."""

from __future__ import annotations

import numpy as np
import torch

from medxfer.training.checkpoints import rng_state, set_rng_state
from medxfer.rng import pack_numpy_state, unpack_numpy_state


def test_a_packed_state_continues_the_stream_cached_gaussian_included():
    stream = np.random.RandomState(3)
    stream.standard_normal()  # leaves a cached second gaussian
    saved = pack_numpy_state(stream.get_state())
    expected = stream.standard_normal(4)
    other = np.random.RandomState(99)
    other.set_state(unpack_numpy_state(saved))
    np.testing.assert_array_equal(other.standard_normal(4), expected)


def test_checkpoints_written_before_the_packed_form_still_restore():
    np.random.seed(5)
    state = np.random.get_state()
    expected = np.random.random_sample(3)
    legacy = {k: v for k, v in rng_state().items() if k != "numpy"}
    legacy.update(numpy_keys=torch.from_numpy(state[1].astype(np.int64)),
                  numpy_pos=int(state[2]))
    set_rng_state(legacy)
    np.testing.assert_array_equal(np.random.random_sample(3), expected)
