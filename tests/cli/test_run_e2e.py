"""`medxfer run` end to end on the embedded sample data: outputs, predict, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medxfer.cli import main

FAST = ["--set", "model.backbone.name=basic_cnn", "--set", "train.epochs=2",
        "--set", "eval.bootstrap=50", "--set", "train.batch_size=16"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "run"
    assert main(["run", "--output", str(out), *FAST]) == 0
    return out


@pytest.mark.slow
def test_run_writes_every_output(finished_run):
    for name in ("config.yaml", "metrics.json", "predictions.csv", "report.md", "report.html",
                 "model.safetensors", "model.json", "checkpoints/last.pt",
                 "figures/training_curves.png", "figures/confusion_matrix.png",
                 "figures/roc_curve.png"):
        assert (finished_run / name).is_file(), name
    assert list((finished_run / "tensorboard").iterdir())
    metrics = json.loads((finished_run / "metrics.json").read_text(encoding="utf-8"))
    for key in ("task", "val", "test", "ci95", "train_seconds", "backbone", "strategy",
                "pretrained"):
        assert key in metrics
    assert metrics["backbone"] == "basic_cnn"
    assert metrics["strategy"]["name"] == "full_finetune"
    assert metrics["epochs_run"] == 2
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert metrics["loss"] == {"alpha": 1.0, "beta": 1.0}
    assert not list(finished_run.rglob("*.tmp"))
    # metrics.json, the report and the console count epochs alike, from 1
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["best_epoch"] in (1, 2)
    report = (finished_run / "report.md").read_text(encoding="utf-8")
    assert f"| Best epoch | {metrics['best_epoch']} (by val_auc) |" in report


@pytest.mark.slow
def test_outputs_get_the_permissions_of_plainly_created_files(finished_run, tmp_path):
    """Atomic writes go through temporary files (0600); the outputs must not keep that."""
    (tmp_path / "plain").write_text("x")
    plain = (tmp_path / "plain").stat().st_mode & 0o777
    for name in ("config.yaml", "metrics.json", "predictions.csv", "report.html",
                 "model.safetensors", "model.json", "figures/roc_curve.png"):
        assert (finished_run / name).stat().st_mode & 0o777 == plain, name


@pytest.mark.slow
def test_predict_classifies_files_to_csv(finished_run, tmp_path, capsys, repo_root):
    images = sorted((repo_root / "sample_data" / "classification").rglob("*.png"))[:3]
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(finished_run), *map(str, images),
                 "--output", str(out_csv)]) == 0
    rows = out_csv.read_text(encoding="utf-8").strip().splitlines()
    assert rows[0].startswith("file,prediction,prob_")
    assert len(rows) == 4
    assert main(["predict", "--run", str(finished_run), str(images[0]),
                 "--output", str(out_csv)]) == 2  # never overwrites


@pytest.mark.slow
def test_predict_output_folder_gets_predictions_csv(finished_run, tmp_path, repo_root):
    """``-o newdir/`` (or an existing folder) means a folder, as for the run's own outputs."""
    image = str(sorted((repo_root / "sample_data" / "classification").rglob("*.png"))[0])
    new = tmp_path / "new"
    assert main(["predict", "--run", str(finished_run), image, "-o", f"{new}/"]) == 0
    assert (new / "predictions.csv").is_file()
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main(["predict", "--run", str(finished_run), image, "-o", str(existing)]) == 0
    rows = (existing / "predictions.csv").read_text(encoding="utf-8").splitlines()
    assert rows[1].startswith(image)
    assert main(["predict", "--run", str(finished_run), image, "-o", str(existing)]) == 2


@pytest.mark.slow
def test_predict_takes_a_colour_copy_of_a_grey_image_alike(finished_run, tmp_path,
                                                           repo_root):
    """An X-ray saved as RGB, given to a run trained on grey images, is converted to grey
    instead of failing in the first convolution."""
    from PIL import Image

    grey = sorted((repo_root / "sample_data" / "classification").rglob("*.png"))[0]
    colour = tmp_path / "colour.png"
    Image.open(grey).convert("RGB").save(colour)
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(finished_run), str(grey), str(colour),
                 "--output", str(out_csv)]) == 0
    rows = [r.split(",") for r in out_csv.read_text(encoding="utf-8").strip().splitlines()[1:]]
    assert [float(v) for v in rows[0][2:]] == pytest.approx([float(v) for v in rows[1][2:]],
                                                            abs=1e-5)


@pytest.mark.slow
def test_predict_classifies_a_single_frame_dicom_file(finished_run, tmp_path, repo_root):
    """A radiograph stored as one DICOM file is a 2D image for a 2D run."""
    from PIL import Image

    from tests.data.datafiles import write_dicom_series

    png = sorted((repo_root / "sample_data" / "classification").rglob("*.png"))[0]
    pixels = np.asarray(Image.open(png)).astype(np.int16)[None]  # one frame
    dicom = write_dicom_series(tmp_path / "xray", pixels, modality="DX")[0]
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", "--run", str(finished_run), str(dicom),
                 "--output", str(out_csv)]) == 0
    rows = out_csv.read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 2 and rows[1].startswith(str(dicom))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["model.json", "metrics.json"])
def test_predict_names_a_corrupt_run_file(finished_run, tmp_path, capsys, repo_root, name):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    (broken / name).write_text("{bad", encoding="utf-8")
    image = sorted((repo_root / "sample_data" / "classification").rglob("*.png"))[0]
    assert main(["predict", "--run", str(broken), str(image)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{broken / name} is unreadable" in err and "Traceback" not in err


@pytest.mark.slow
def test_predict_and_export_of_an_unfinished_run_warn(finished_run, tmp_path, capsys,
                                                      repo_root):
    """A run stopped before its test evaluation has its best model so far and no decision
    threshold: usable, with a warning saying so and how to finish it."""
    import shutil

    image = sorted((repo_root / "sample_data" / "classification").rglob("*.png"))[0]
    assert main(["predict", "--run", str(finished_run), str(image)]) == 0
    assert "has not finished" not in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(finished_run, unfinished, ignore=shutil.ignore_patterns("export"))
    (unfinished / "metrics.json").unlink()
    assert main(["predict", "--run", str(unfinished), str(image)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"'{unfinished}' has not finished (no metrics.json" in err
    assert f"medxfer run --resume --output {unfinished}" in err
    assert main(["export", "--run", str(unfinished), "--format", "torchscript"]) == 0
    assert "has not finished" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_domain_target_needs_domain_specific_layers(finished_run, capsys, repo_root):
    image = sorted((repo_root / "sample_data" / "classification").rglob("*.png"))[0]
    assert main(["predict", "--run", str(finished_run), str(image), "--domain", "target"]) == 2
    assert "has no domain-specific layers" in " ".join(capsys.readouterr().err.split())


def test_predict_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["predict", "--run", str(tmp_path), str(tmp_path / "x.png")]) == 2
    assert "not a finished medxfer run" in capsys.readouterr().err


@pytest.mark.slow
def test_transfer_from_an_earlier_run(finished_run, tmp_path):
    out = tmp_path / "second"
    assert main(["run", "--output", str(out), *FAST, "--set", "train.epochs=1",
                 "--set", f"model.backbone.pretrained={finished_run}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["load_report"]["loaded"] == metrics["load_report"]["expected"] > 0


@pytest.mark.slow
def test_killed_run_resumes_to_the_configured_epochs(tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "medxfer", "run", "--output", str(out),
            "--set", "model.backbone.name=mobilenet_v2", "--set", "model.backbone.pretrained=none",
            "--set", "train.epochs=4", "--set", "eval.bootstrap=20"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert last.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
    time.sleep(0.5)  # now inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    resumed = subprocess.run([sys.executable, "-m", "medxfer", "run", "--output", str(out),
                              "--resume"], env=env, capture_output=True, encoding="utf-8",
                             errors="replace")
    assert resumed.returncode == 0, resumed.stderr
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert (out / "report.html").is_file()
    # the resumed run continues the data order, augmentation and dropout streams: it
    # trains exactly as the run that was never killed
    whole = tmp_path / "whole"
    done = subprocess.run([*args[:5], str(whole), *args[6:]], env=env, capture_output=True,
                          encoding="utf-8", errors="replace")
    assert done.returncode == 0, done.stderr
    expected = json.loads((whole / "metrics.json").read_text(encoding="utf-8"))["history"]
    for got, want in zip(metrics["history"], expected):
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5), got["epoch"]
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5), got["epoch"]


@pytest.mark.slow
def test_killed_deep_ensemble_resumes_the_member_it_was_training(tmp_path):
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "medxfer", "run", "--output", str(out),
            "--set", "model.backbone.name=mobilenet_v2", "--set", "model.backbone.pretrained=none",
            "--set", "train.epochs=3", "--set", "eval.bootstrap=20",
            "--set", "ensemble.members=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = out / "members" / "m1" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert last.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
    time.sleep(0.5)  # now inside member 1's epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "metrics.json").exists()
    assert not (out / "members" / "m1" / "metrics.json").exists()
    finished = (out / "members" / "m0" / "metrics.json").stat().st_mtime_ns
    assert main(["run", "--output", str(out), "--resume"]) == 0
    assert (out / "members" / "m0" / "metrics.json").stat().st_mtime_ns == finished
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for member in summary["ensemble"]["member_runs"]:
        history = json.loads((out / member["run"] / "metrics.json").read_text())["history"]
        assert [h["epoch"] for h in history] == [1, 2, 3]  # counted from 1
    assert (out / "report.html").is_file() and summary["ensemble"]["seeds"] == [0, 1]


@pytest.mark.slow
def test_corrupt_checkpoint_is_refused(finished_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    (copy / "metrics.json").unlink()  # killed before its test evaluation
    (copy / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    assert main(["run", "--output", str(copy), "--resume"]) == 2
    assert "not a PyTorch checkpoint; delete it" in capsys.readouterr().err
