"""The benchmark scripts run end to end (tiny step counts; no timing is asserted)."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.fixture
def bench(repo_root, monkeypatch):
    monkeypatch.syspath_prepend(str(repo_root / "benchmarks"))
    yield lambda name: importlib.import_module(name)
    for name in ("data_loading", "amp_compile", "ddp_scaling", "data_check", "cli_startup",
                 "_common"):
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_data_loading_prints_the_ratio(bench, repo_root, capsys):
    module = bench("data_loading")
    config = repo_root / "configs" / "sample_segmentation_2d.yaml"
    assert module.main([str(config), "--steps", "2", "--repeats", "1",
                        "--set", "train.threads=1"]) == 0
    out = capsys.readouterr().out
    assert "sample_segmentation_2d.yaml" in out and "worst ratio pipeline/pre-loaded" in out


def test_data_loading_times_a_short_epoch_whole(bench):
    module = bench("data_loading")
    assert module.block_steps(range(9), None) == 9  # BreastMNIST: one block, one epoch
    assert module.block_steps(range(74), None) == module.BLOCK_STEPS
    assert module.block_steps(range(9), 3) == 3  # --steps wins


@pytest.mark.slow
def test_amp_compile_reports_each_variant(bench, repo_root, capsys):
    module = bench("amp_compile")
    config = repo_root / "configs" / "sample_segmentation_2d.yaml"
    assert module.main([str(config), "--steps", "1", "--warmup", "1", "--device", "cpu",
                        "--variants", "fp32,fp16,channels_last",
                        "--set", "train.threads=1"]) == 0
    out = capsys.readouterr().out
    assert "fp32" in out and "1.00x" in out
    assert "n/a on this device" in out  # fp16 needs CUDA
    assert "channels_last" in out
    assert "train.amp: auto would choose fp32 (no probe on the CPU): " in out


def test_amp_compile_says_what_auto_would_choose(bench):
    module = bench("amp_compile")
    torch = __import__("torch")
    h200 = {"fp32": 512.0, "fp16": 342.0, "bf16": 334.0, "fp32_cudagraphs": 1034.0}
    assert module.auto_choice_line(h200, torch.device("cuda")) == (
        "train.amp: auto would choose fp32 (fastest of fp32/bf16/fp16 above; fp16 only when "
        "5% faster): 512.0 samples/s = 0.50x of the fastest variant, fp32_cudagraphs")
    line = module.auto_choice_line({"fp32": 100.0, "fp16": 104.0, "bf16": 90.0},
                                   torch.device("cuda"))
    assert line.startswith("train.amp: auto would choose fp32 ") and line.endswith(
        "0.96x of the fastest variant, fp16")
    assert "choose fp16" in module.auto_choice_line({"fp32": 100.0, "fp16": 120.0},
                                                    torch.device("cuda"))


def test_amp_compile_rejects_an_unknown_variant(bench, repo_root):
    module = bench("amp_compile")
    with pytest.raises(SystemExit, match="unknown variant"):
        module.variant_settings("fp8", __import__("torch").device("cpu"), 2)


@pytest.mark.slow
def test_ddp_scaling_runs_every_base_setting(bench, repo_root, capsys):
    # The tuning rows run in test_ddp_scaling_pairs_the_tunings_in_one_job; --base keeps
    # this test to the five settings without them (five torchrun jobs fewer in CI).
    module = bench("ddp_scaling")
    config = repo_root / "configs" / "sample_segmentation_2d.yaml"
    assert module.main([str(config), "--base", "--steps", "1", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    for setting in ("1 process x 1 thread", "2 processes x 1 thread", "1 process x 2 threads",
                    "2 processes x 1 thread, no sync", "2 processes x 1 thread, barrier only"):
        assert setting in out
    assert "DDP bucket" not in out
    assert "gloo all-reduce of the" in out and "ms barrier only" in out


@pytest.mark.slow
def test_ddp_scaling_pairs_the_tunings_in_one_job(bench, repo_root, capsys):
    module = bench("ddp_scaling")
    config = repo_root / "configs" / "sample_segmentation_2d.yaml"
    assert module.main([str(config), "--paired", "--steps", "1", "--warmup", "1",
                        "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "alternating blocks" in out and "vs DDP, median" in out
    plain = next(line for line in out.splitlines() if line.startswith("2 processes x 1 thread "))
    assert "1.000x" in plain  # plain DDP against itself
    for tuning in ("DDP bucket 1 MiB", "DDP bucket 100 MiB",
                   "DDP gradient_as_bucket_view + static_graph"):
        assert f"2 processes x 1 thread, {tuning}" in out


def test_ddp_scaling_tuning_rows_set_every_ddp_option(bench):
    module = bench("ddp_scaling")
    tuned = [s for s in module.SETTINGS if s[3] is not None]
    assert len(tuned) == len(module.TUNINGS)
    for nproc, threads, sync, options in tuned:
        assert (nproc, threads, sync) == (2, 1, "ddp")
        assert sorted(module.ddp_overrides(options)) == sorted(
            f"train.ddp.{key}={str(value).lower()}" for key, value in options.items())
    assert module.ddp_overrides(None) == []  # the plain DDP row keeps the config's options
    options = {**module.TORCH_DDP, "bucket_cap_mb": 100, "static_graph": True}
    assert module.setting_label(2, 1, "ddp", options) == \
        "2 processes x 1 thread, DDP bucket 100 MiB + static_graph"
    assert module.setting_label(2, 1, "ddp", module.TORCH_DDP).endswith("DDP as torch")


def test_data_check_prints_the_ratio_against_reading_once(bench, repo_root, capsys):
    module = bench("data_check")
    data = repo_root / "sample_data"
    assert module.main([str(data / "classification"), str(data / "segmentation_3d"),
                        "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "classification" in out and "segmentation_3d" in out and "msd" in out
    assert "worst ratio check/read" in out


def test_cli_startup_prints_each_command_with_its_ratio(bench, capsys):
    module = bench("cli_startup")
    assert module.main(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for label in ("python -c pass", "medxfer --help", "medxfer --version", "medxfer plugins"):
        line = next(line for line in out.splitlines() if line.startswith(label))
        assert line.rstrip().endswith("  -"), f"{label} imported torch or MONAI: {line}"
    assert "1.0x" in out


@pytest.mark.slow
def test_dataset_scale_measures_every_mode_on_small_sets(repo_root, tmp_path):
    """Two small sets through auto, a budget that runs out, disk and packed shards: every row
    reads every training case twice, the pack holds the same cases, the figure is drawn."""
    import json
    import os
    import subprocess

    rows_file, figure = tmp_path / "rows.json", tmp_path / "scale.png"
    done = subprocess.run(
        [sys.executable, str(repo_root / "benchmarks" / "dataset_scale.py"), "--sizes-2d", "70",
         "--sizes-3d", "30", "--modes", "auto,auto:100kB,disk,packed", "--root",
         str(tmp_path / "data"), "--json", str(rows_file), "--figure", str(figure)],
        capture_output=True, text=True, cwd=repo_root, timeout=900, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {(r["set"], r["mode"]): r for r in json.loads(rows_file.read_text())}
    assert len(rows) == 8 and figure.stat().st_size > 0
    for (name, mode), row in rows.items():
        assert row["train"] - 1 <= row["seen"] <= row["train"]  # a last batch of one: dropped
        assert row["cases"] == rows[(name, "auto")]["cases"]
    assert rows[("2D 70", "auto")]["cache_used"] == 70 * 224 * 224  # uint8, lossless
    assert "the memory budget ran out" in " ".join(rows[("2D 70", "auto:100kB")]["cache_lines"])
    assert rows[("2D 70", "disk")]["cache_used"] == 0
    assert "2D 70" in done.stdout and "packed" in done.stdout
