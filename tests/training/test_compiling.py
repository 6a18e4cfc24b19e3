"""compiling: train.compile's modes, the CPU fallback of cudagraphs, and the CUDA-graph step
marks of training steps and evaluation forwards (counted on the CPU)."""

from __future__ import annotations

import pytest
import torch

from medxfer.config import load_config
from medxfer.errors import ConfigError, MedxferWarning
from medxfer.training import compiling
from medxfer.training.amp import Precision
from medxfer.training.evaluate import predict
from medxfer.tasks import task_of
from tests.training.test_trainer import batches, make_trainer, tiny_network


@pytest.fixture
def marks(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: calls.append(1))
    return calls


def test_compile_settings_validate_and_true_stays_torchs_default_mode():
    for given, kept in (("true", True), ("false", False), ("default", "default"),
                        ("cudagraphs", "cudagraphs")):
        assert load_config(None, [f"train.compile={given}"]).train.compile == kept
    assert compiling.torch_compile_mode(True) is None
    assert compiling.torch_compile_mode("default") is None
    assert compiling.torch_compile_mode("cudagraphs") == "reduce-overhead"
    with pytest.raises(ConfigError, match=r"train.compile: give false, true, default or "
                                          r"cudagraphs \(got 'max-autotune'\)"):
        load_config(None, ["train.compile=max-autotune"])


def test_cudagraphs_on_an_explicit_cpu_device_is_refused():
    with pytest.raises(ConfigError, match="train.compile: cudagraphs needs a CUDA device but "
                                          "train.device is cpu; use train.compile: true"):
        load_config(None, ["train.compile=cudagraphs", "train.device=cpu"])


def test_cudagraphs_on_a_cpu_found_by_auto_warns_and_trains_uncompiled():
    cpu = torch.device("cpu")
    with pytest.warns(MedxferWarning, match="cudagraphs needs a CUDA GPU.*without compiling"):
        assert compiling.run_compile_setting("cudagraphs", cpu) is False
    assert compiling.run_compile_setting(True, cpu) is True
    assert compiling.run_compile_setting("cudagraphs", torch.device("cuda")) == "cudagraphs"


class Compiled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.modes: list = []

    def compile_submodules(self, mode=None):
        self.modes.append(mode)


@pytest.mark.parametrize("setting, modes, graphed", [
    (False, [], False), (True, [None], False), ("default", [None], False),
    ("cudagraphs", ["reduce-overhead"], True)])
def test_compile_network(marks, setting, modes, graphed):
    model = Compiled()
    compiling.compile_network(model, setting)
    assert model.modes == modes
    compiling.begin_step(model)
    assert len(marks) == int(graphed)


def test_the_network_compiles_its_submodules_in_the_mode(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: seen.append(kw))
    tiny_network().compile_submodules(mode="reduce-overhead")
    assert seen == [{"mode": "reduce-overhead"}] * 2  # backbone and head


def test_the_trainer_marks_each_training_step_once(tmp_path, marks):
    model = tiny_network()
    compiling.mark_cudagraph_steps(model)
    trainer = make_trainer(tmp_path, epochs=2, model=model)
    trainer.fit()
    assert len(marks) == 2 * len(batches())  # 2 epochs of 4 steps (validation marks none)


def test_an_eager_network_is_never_marked(tmp_path, marks):
    make_trainer(tmp_path, epochs=1).fit()
    assert marks == []


def test_evaluation_marks_each_forward(marks):
    model = tiny_network()
    compiling.mark_cudagraph_steps(model)
    task = task_of(load_config(None, []))
    predictions = predict(model, batches(3), torch.device("cpu"), Precision(None, "cpu"), task)
    assert len(predictions.ids) == 12
    assert len(marks) == 3


def test_segmentation_inference_marks_each_forward(marks):
    from medxfer.tasks.segmentation.inference import predict_probabilities

    net = torch.nn.Conv2d(1, 3, 1)
    compiling.mark_cudagraph_steps(net)
    config = load_config(None, ["task=segmentation"])
    probs = predict_probabilities(net, torch.rand(2, 1, 8, 8), config,
                                  device=torch.device("cpu"), precision=Precision(None, "cpu"))
    assert probs.shape == (2, 3, 8, 8)
    assert len(marks) == 1
