"""run_setup.choose_run_precision: when a run probes (train.amp: auto on CUDA only), what
the probe is keyed by, and that every rank of a distributed run takes rank 0's choice.
The GPU is faked: the probe's batch and timings are injected."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medxfer.config import load_config
from medxfer.training import distributed as D
from medxfer.training.precision_probe import CACHE_ENV, PrecisionChoice
from medxfer.workflows import run_setup
from tests.training.test_trainer import tiny_network

CUDA = torch.device("cuda")


class Probe:
    """Stands in for the GPU: the probe's batch and its timings, counting what is timed."""

    def __init__(self, monkeypatch, tmp_path, **speeds: float) -> None:
        self.timed: list[str] = []
        self.timers: list[dict] = []
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "probe.json"))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
        monkeypatch.setattr(run_setup, "first_training_batch",
                            lambda loader, device: (torch.rand(8, 1, 16, 16),
                                                    torch.zeros(8, dtype=torch.long)))

        def timer(model, loss_fn, images, labels, device, **options):
            self.timers.append(options)
            return lambda variant: self.timed.append(variant) or speeds[variant]

        monkeypatch.setattr(run_setup, "training_step_timer", timer)


def choose(config, device=CUDA):
    return run_setup.choose_run_precision(config, tiny_network(), device, [], nn.CrossEntropyLoss(),
                                          compile_setting=config.train.compile)


def test_auto_on_cuda_probes_once_then_uses_the_cache(monkeypatch, tmp_path):
    probe = Probe(monkeypatch, tmp_path, fp32=1034.0, bf16=334.0, fp16=342.0)
    config = load_config(None, ["train.compile=cudagraphs", "train.channels_last=true"])
    precision, choice = choose(config)
    assert precision.describe() == "fp32" and precision.device_type == "cuda"
    assert probe.timed == ["fp32", "bf16", "fp16"] and not choice.cached
    assert probe.timers == [{"channels_last": True, "compile_setting": "cudagraphs"}]
    (entry,) = json.loads((tmp_path / "probe.json").read_text())["entries"].values()
    assert entry["network"]["input"] == [8, 1, 16, 16]
    assert entry["network"]["compile"] == "cudagraphs"
    assert entry["network"]["model"]["backbone"]["name"] == config.model.backbone.name
    assert "pretrained" not in entry["network"]["model"]["backbone"]
    assert entry["facts"]["gpu"] == "NVIDIA H200"

    precision, choice = choose(config)
    assert choice.cached and precision.describe() == "fp32"
    assert probe.timed == ["fp32", "bf16", "fp16"]  # not timed again
    other = load_config(None, ["train.compile=false", "train.channels_last=true"])
    choose(other)
    assert len(probe.timed) == 6  # another compile setting: probed again


@pytest.mark.parametrize("overrides, expected", [
    (["train.amp=auto"], "fp32"), (["train.amp=bf16"], "bf16")])
def test_the_cpu_never_probes(monkeypatch, tmp_path, overrides, expected):
    probe = Probe(monkeypatch, tmp_path, fp32=1.0, bf16=2.0)
    precision, choice = choose(load_config(None, overrides), torch.device("cpu"))
    assert precision.describe() == expected and choice is None and probe.timed == []


@pytest.mark.parametrize("amp, expected", [("fp16", "fp16"), ("bf16", "bf16"), ("off", "fp32")])
def test_an_explicit_precision_never_probes(monkeypatch, tmp_path, amp, expected):
    probe = Probe(monkeypatch, tmp_path, fp32=9.0, bf16=1.0, fp16=1.0)
    precision, choice = choose(load_config(None, [f"train.amp={amp}"]))
    assert precision.describe() == expected and choice is None and probe.timed == []


def test_in_a_distributed_run_only_rank_zero_probes_and_all_take_its_choice(monkeypatch,
                                                                            tmp_path):
    probe = Probe(monkeypatch, tmp_path, fp32=1.0, bf16=1.0, fp16=9.0)
    rank_zero = PrecisionChoice("bf16", {"fp32": 1.0, "bf16": 2.0}, device_name="NVIDIA H200")
    sent = []
    monkeypatch.setattr(D, "is_main", lambda: False)
    monkeypatch.setattr(D, "from_rank_zero", lambda obj: sent.append(obj) or rank_zero)
    precision, choice = choose(load_config(None, []))
    assert probe.timed == [] and sent == [None]  # this rank measured nothing
    assert choice is rank_zero and precision.describe() == "bf16"

    monkeypatch.setattr(D, "is_main", lambda: True)
    monkeypatch.setattr(D, "from_rank_zero", lambda obj: sent.append(obj) or obj)
    precision, _ = choose(load_config(None, []))
    assert probe.timed == ["fp32", "bf16", "fp16"]
    assert sent[-1].variant == "fp16" and precision.describe() == "fp16"  # what it broadcast


@pytest.mark.slow
def test_a_run_says_and_records_its_precision_choice(monkeypatch, tmp_path, capsys):
    from medxfer.training.amp import Precision
    from medxfer.errors import MedxferWarning
    from medxfer.workflows import single_run
    from medxfer.workflows.run import run_pipeline

    choice = PrecisionChoice("bf16", {"fp32": 812.0, "bf16": 1190.0, "fp16": 1105.0},
                             device_name="NVIDIA H200", cached=True)
    seen = []

    def probed(config, model, device, train_loader, loss_fn, *, compile_setting):
        seen.append(compile_setting)
        return Precision(None, device.type), choice  # the CPU trains in fp32 all the same

    monkeypatch.setattr(single_run, "choose_run_precision", probed)
    config = load_config(None, ["train.epochs=1", "eval.bootstrap=0", "train.batch_size=8",
                                "data.limit=16", "model.backbone.name=basic_cnn",
                                "model.backbone.pretrained=none", "train.compile=cudagraphs"])
    with pytest.warns(MedxferWarning, match="cudagraphs needs a CUDA GPU"):
        summary = run_pipeline(config, tmp_path / "run", progress=True)
    assert seen == [False]  # device auto found the CPU: no compiling
    assert ("precision: bf16 (probe on NVIDIA H200: fp32 812/s, bf16 1190/s, fp16 1105/s; "
            "cached)") in capsys.readouterr().err
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["precision_choice"]
    assert recorded == summary["precision_choice"] == choice.as_dict()
