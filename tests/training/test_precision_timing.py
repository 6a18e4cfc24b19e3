"""precision_timing: the real measurement behind train.amp: auto, run on the CPU for a tiny
network (fp32 and bf16; the run itself probes only on CUDA), and the probe's batch."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from medxfer.training import compiling
from medxfer.training.precision_timing import (
    first_training_batch,
    preserved_random_state,
    training_step_timer,
)
from tests.training.test_trainer import tiny_network


def test_the_measure_times_training_steps_of_a_copy_in_each_precision():
    model = tiny_network()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    measure = training_step_timer(model, nn.CrossEntropyLoss(), images, labels,
                                  torch.device("cpu"), channels_last=True, warmup=1, steps=2)
    for variant in ("fp32", "bf16"):
        assert measure(variant) > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the run's network untouched


def test_each_timed_step_of_a_cudagraph_network_marks_a_step(monkeypatch):
    marks = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    model = tiny_network()
    compiling.mark_cudagraph_steps(model)  # as compile_network does for cudagraphs
    measure = training_step_timer(model, nn.CrossEntropyLoss(), torch.randn(2, 1, 8, 8),
                                  torch.tensor([0, 1]), torch.device("cpu"), warmup=1, steps=3)
    measure("fp32")
    assert len(marks) == 4


class Augmented(torch.utils.data.Dataset):
    """Items that draw from torch's global generator, as random augmentation does."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return {"image": torch.rand(1, 4, 4) + index, "label": index % 2}


def test_the_probe_batch_leaves_the_runs_random_streams_as_they_were():
    loader = DataLoader(Augmented(), batch_size=3, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    expected = [b["image"] for b in loader]
    expected_draws = (torch.rand(2), random.random(), np.random.rand())

    loader.generator.manual_seed(0)
    torch.manual_seed(5)
    random.seed(5)
    np.random.seed(5)
    with preserved_random_state(loader):
        images, labels = first_training_batch(loader, torch.device("cpu"))
        torch.rand(100)  # the probe's own steps draw too (dropout)
    assert images.shape == (3, 1, 4, 4) and labels.tolist() == [0, 1, 0]  # the first items
    assert all(torch.equal(a, b["image"]) for a, b in zip(expected, loader))
    draws = (torch.rand(2), random.random(), np.random.rand())
    assert torch.equal(draws[0], expected_draws[0]) and draws[1:] == expected_draws[1:]
