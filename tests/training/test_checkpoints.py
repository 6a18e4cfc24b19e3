"""Loading a run's checkpoint: a file that cannot be loaded gets a short, safe message."""

from __future__ import annotations

import io
import os
import random

import pytest
import torch

from medxfer.errors import CheckpointError
from medxfer.training.checkpoints import (
    LAST_STATE,
    load_training_state,
    save_training_state,
)


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    save_training_state(run, {"model": {"w": torch.zeros(64, 64)}, "epoch": 0})
    return run


def refused(run_dir) -> str:
    with pytest.raises(CheckpointError) as info:
        load_training_state(run_dir)
    message = str(info.value)
    assert str(run_dir / LAST_STATE) in message
    assert message.endswith("delete it and run the same command again to restart the run "
                            "from scratch")
    # none of PyTorch's text: it suggests loading the file unsafely
    for text in ("weights_only", "Weights only", "arbitrary code", "file an issue",
                 "PytorchStreamReader", "miniz", "EOFError", "RuntimeError", "UnpicklingError",
                 "KeyError"):
        assert text not in message, text
    return message


def test_a_good_checkpoint_loads(run_dir):
    assert load_training_state(run_dir)["epoch"] == 0


def test_an_empty_checkpoint_is_named_empty(run_dir):
    (run_dir / LAST_STATE).write_bytes(b"")
    assert "is empty (0 bytes)" in refused(run_dir)


def test_a_truncated_checkpoint_is_named_truncated(run_dir):
    path = run_dir / LAST_STATE
    os.truncate(path, path.stat().st_size // 2)
    assert "is truncated or damaged, or not a PyTorch checkpoint" in refused(run_dir)


@pytest.mark.parametrize("data", [
    random.Random(0).randbytes(4096), b"not a checkpoint\n" * 10,
    b"R3\xf7\xcb" * 100,  # a pickle REDUCE on an empty stack: IndexError in torch's unpickler
    b"\x80\x02}q\x00(X\x01\x00\x00\x00a" + b"\xff" * 50])  # a cut-off pickle of a dict
def test_random_bytes_are_not_a_checkpoint(run_dir, data):
    (run_dir / LAST_STATE).write_bytes(data)
    assert "is truncated or damaged, or not a PyTorch checkpoint" in refused(run_dir)


def test_pickled_objects_are_refused_as_not_written_by_medxfer(run_dir):
    torch.save({"model": {}, "epoch": 0, "reader": io.BytesIO}, run_dir / LAST_STATE)
    message = refused(run_dir)
    assert "holds objects that a safe (weights-only) load refuses" in message
    assert "not written by medxfer" in message


def test_a_checkpoint_of_something_else_is_not_a_training_state(run_dir):
    torch.save({"weights": torch.zeros(2)}, run_dir / LAST_STATE)
    assert "is not a medxfer training state" in refused(run_dir)
