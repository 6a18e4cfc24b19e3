"""precision_probe: train.amp: auto's choice among fp32, bf16 and fp16 from injected
timings, and its cache."""

from __future__ import annotations

import json

import pytest
import torch

from medxfer.errors import MedxferWarning
from medxfer.training import precision_probe as P

CUDA = torch.device("cuda")
H200 = {"gpu": "NVIDIA H200", "torch": "2.14.1", "cuda": "13.0"}
UNET = {"model": {"backbone": {"name": "unet_3d"}}, "input": [8, 1, 32, 48, 32],
        "channels_last": False, "compile": False}


class FakeTimings:
    """A ``measure`` that returns fixed samples/s per variant (or raises) and counts calls."""

    def __init__(self, **speeds: float | Exception) -> None:
        self.speeds = speeds
        self.calls: list[str] = []

    def __call__(self, variant: str) -> float:
        self.calls.append(variant)
        value = self.speeds[variant]
        if isinstance(value, Exception):
            raise value
        return value


@pytest.fixture
def bf16_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def choose(tmp_path, measure, network=UNET, facts=H200):
    return P.choose_precision(CUDA, measure, network=network, facts=facts,
                              cache_path=tmp_path / "probe.json")


@pytest.mark.parametrize("speeds, chosen", [
    ({"fp32": 812.0, "bf16": 1190.0, "fp16": 1105.0}, "bf16"),
    ({"fp32": 1034.0, "bf16": 334.0, "fp16": 342.0}, "fp32"),
    ({"fp32": 500.0, "bf16": 600.0, "fp16": 700.0}, "fp16"),   # 17% faster than bf16
    ({"fp32": 500.0, "bf16": 600.0, "fp16": 620.0}, "bf16"),   # 3%: no loss scaling for it
    ({"fp32": 600.0, "bf16": 600.0, "fp16": 100.0}, "fp32"),   # a tie keeps fp32
])
def test_the_fastest_is_chosen_and_fp16_only_by_a_margin(tmp_path, bf16_gpu, speeds, chosen):
    measure = FakeTimings(**speeds)
    choice = choose(tmp_path, measure)
    assert choice.variant == chosen
    assert measure.calls == ["fp32", "bf16", "fp16"]
    assert choice.precision(CUDA).describe() == chosen
    assert choice.precision(CUDA).needs_scaler == (chosen == "fp16")
    assert not choice.cached


def test_the_run_log_line_says_what_was_chosen_and_why(tmp_path, bf16_gpu):
    choose(tmp_path, FakeTimings(fp32=812.0, bf16=1190.0, fp16=1105.0))
    again = choose(tmp_path, FakeTimings())
    assert again.describe() == ("precision: bf16 (probe on NVIDIA H200: fp32 812/s, "
                                "bf16 1190/s, fp16 1105/s; cached)")
    close = choose(tmp_path, FakeTimings(fp32=500.0, bf16=600.0, fp16=620.0),
                   network={**UNET, "input": [4, 1, 32, 48, 32]})
    assert "fp16 not 5% faster, so no loss scaling" in close.describe()
    record = again.as_dict()
    assert record["chosen"] == "bf16" and record["cached"] is True
    assert record["samples_per_s"] == {"fp32": 812.0, "bf16": 1190.0, "fp16": 1105.0}


def test_a_variant_that_fails_is_skipped_with_a_note(tmp_path, bf16_gpu):
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB\nmore lines")
    choice = choose(tmp_path, FakeTimings(fp32=500.0, bf16=oom, fp16=520.0))
    assert choice.variant == "fp32"  # fp16 is 4% faster than fp32: not enough
    assert choice.skipped == {"bf16": "OutOfMemoryError: CUDA out of memory. Tried to "
                                      "allocate 2 GiB"}
    assert "bf16 skipped: OutOfMemoryError" in choice.describe()


def test_a_gpu_without_bf16_times_fp32_and_fp16_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    measure = FakeTimings(fp32=300.0, fp16=900.0)  # a V100: no TF32, fp16 tensor cores
    choice = choose(tmp_path, measure)
    assert measure.calls == ["fp32", "fp16"]
    assert choice.variant == "fp16"
    assert choice.skipped == {"bf16": "not supported by this GPU"}


def test_nothing_timed_trains_in_fp32_warns_and_caches_nothing(tmp_path, bf16_gpu):
    fail = RuntimeError("cuDNN error")
    with pytest.warns(MedxferWarning, match="could not time any precision.*training in fp32"):
        choice = choose(tmp_path, FakeTimings(fp32=fail, bf16=fail, fp16=fail))
    assert choice.variant == "fp32"
    assert not (tmp_path / "probe.json").exists()


def test_a_cache_hit_does_not_measure_again(tmp_path, bf16_gpu):
    choose(tmp_path, FakeTimings(fp32=1.0, bf16=3.0, fp16=2.0))
    measure = FakeTimings()
    choice = choose(tmp_path, measure)
    assert measure.calls == []
    assert choice.cached and choice.variant == "bf16"
    data = json.loads((tmp_path / "probe.json").read_text(encoding="utf-8"))
    (entry,) = data["entries"].values()
    assert entry["facts"] == H200 and entry["network"] == UNET


@pytest.mark.parametrize("network, facts", [
    ({**UNET, "input": [16, 1, 32, 48, 32]}, H200),                      # batch size
    ({**UNET, "model": {"backbone": {"name": "resnet18_3d"}}}, H200),    # network
    ({**UNET, "channels_last": True}, H200),
    ({**UNET, "compile": "cudagraphs"}, H200),
    (UNET, {**H200, "gpu": "NVIDIA A100-SXM4-80GB"}),                    # another GPU
    (UNET, {**H200, "torch": "2.15.0"}),
])
def test_another_network_input_or_machine_probes_again(tmp_path, bf16_gpu, network, facts):
    choose(tmp_path, FakeTimings(fp32=1.0, bf16=3.0, fp16=2.0))
    measure = FakeTimings(fp32=5.0, bf16=1.0, fp16=1.0)
    choice = choose(tmp_path, measure, network=network, facts=facts)
    assert measure.calls == ["fp32", "bf16", "fp16"] and choice.variant == "fp32"
    entries = json.loads((tmp_path / "probe.json").read_text(encoding="utf-8"))["entries"]
    assert len(entries) == 2  # both kept


@pytest.mark.parametrize("text", ["{not json", '{"version": 1, "entries": []}', "[1, 2]",
                                  "\xff\xfe"])
def test_a_damaged_cache_is_ignored_with_one_warning_and_rewritten(tmp_path, bf16_gpu, text):
    path = tmp_path / "probe.json"
    path.write_bytes(text.encode("latin-1"))
    measure = FakeTimings(fp32=1.0, bf16=3.0, fp16=2.0)
    with pytest.warns(MedxferWarning, match="probe.json") as caught:
        choice = choose(tmp_path, measure)
    assert len([w for w in caught if issubclass(w.category, MedxferWarning)]) == 1
    assert measure.calls == ["fp32", "bf16", "fp16"] and choice.variant == "bf16"
    assert json.loads(path.read_text(encoding="utf-8"))["version"] == 1
    assert choose(tmp_path, FakeTimings()).cached


def test_a_cache_of_another_version_is_replaced_without_a_warning(tmp_path, bf16_gpu, recwarn):
    (tmp_path / "probe.json").write_text('{"version": 99, "entries": {"x": 1}}')
    choose(tmp_path, FakeTimings(fp32=1.0, bf16=3.0, fp16=2.0))
    assert not [w for w in recwarn if issubclass(w.category, MedxferWarning)]
    data = json.loads((tmp_path / "probe.json").read_text(encoding="utf-8"))
    assert data["version"] == 1 and "x" not in data["entries"]


def test_an_unwritable_cache_warns_and_the_choice_stands(tmp_path, bf16_gpu):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.warns(MedxferWarning, match="could not be cached") as caught:
        choice = P.choose_precision(CUDA, FakeTimings(fp32=1.0, bf16=3.0, fp16=2.0),
                                    network=UNET, facts=H200,
                                    cache_path=blocker / "sub" / "probe.json")
    assert choice.variant == "bf16"
    assert len(caught) == 1


def test_the_cache_file_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(P.CACHE_ENV, raising=False)
    assert P.probe_cache_path() == tmp_path / "xdg" / "medxfer" / "precision_probe.json"
    monkeypatch.setenv(P.CACHE_ENV, str(tmp_path / "mine.json"))
    assert P.probe_cache_path() == tmp_path / "mine.json"
    monkeypatch.delenv(P.CACHE_ENV)
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert P.probe_cache_path() == tmp_path / "home" / ".cache" / "medxfer" / "precision_probe.json"


def test_fastest_variant_rule():
    assert P.fastest_variant({}) == "fp32"
    assert P.fastest_variant({"fp16": 1.0}) == "fp16"
    assert P.fastest_variant({"fp32": 100.0, "fp16": 105.0}) == "fp32"  # exactly 5%: no
    assert P.fastest_variant({"fp32": 100.0, "fp16": 105.1}) == "fp16"
    assert P.fastest_variant({"bf16": 2.0, "fp32": 1.0}) == "bf16"
