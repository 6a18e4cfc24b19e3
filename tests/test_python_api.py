"""The Python API (``medxfer.run``, ``medxfer.predict``, ``medxfer.load_run``,
``medxfer.inspect``) used as a notebook would: a fresh interpreter, ``import medxfer``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import medxfer
from medxfer.errors import CheckpointError, ConfigError
from tests.workflows.export.helpers import SEG_3D, make_run, write_volume

REPO = Path(__file__).resolve().parents[1]

#: What a notebook user types, cell after cell, on the embedded sample data.
NOTEBOOK = """
import json, sys
from pathlib import Path

import torch
import medxfer

work, sample = Path(sys.argv[1]), Path(sys.argv[2])
summary = medxfer.inspect(sample)
images = [Path(summary.datalist.cases[i]["image"]) for i in (0, 1, -1)]

result = medxfer.run({"data": {"path": str(sample)}}, output=work / "run", overrides={
    "model.backbone.name": "basic_cnn", "train.epochs": 1, "train.batch_size": 16,
    "eval.bootstrap": 0})

loaded = medxfer.load_run(result.run_dir)
x = loaded.preprocess(images[0])
with torch.no_grad():
    probabilities = torch.softmax(loaded.model(x[None]), dim=1)[0].tolist()

rows = medxfer.predict(result.run_dir, images)
written = medxfer.predict(loaded, images, output=work / "predictions.csv")

try:
    medxfer.run(overrides={"train.epochs": 0}, output=work / "bad")
    refused = None
except medxfer.ConfigError as exc:
    refused = str(exc)

print(json.dumps({
    "run_dir": str(result.run_dir), "test": result.summary["test"],
    "cases": len(summary.datalist.cases), "shape": list(x.shape),
    "probabilities": probabilities, "rows": rows, "written": written,
    "csv": (work / "predictions.csv").is_file(), "refused": refused,
    "classes": loaded.class_names}))
"""


@pytest.mark.slow
def test_a_notebook_trains_loads_and_predicts_with_the_python_api(tmp_path):
    script = tmp_path / "notebook.py"
    script.write_text(textwrap.dedent(NOTEBOOK), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "MPLBACKEND": "Agg"}
    sample = REPO / "sample_data" / "classification"
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(sample)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["run_dir"] == str(tmp_path / "run") and out["cases"] > 3
    assert (tmp_path / "run" / "metrics.json").is_file()
    assert 0.0 <= out["test"]["accuracy"] <= 1.0
    assert out["shape"][0] == 1 and len(out["shape"]) == 3  # [C, H, W] of the model's input
    rows, names = out["rows"], out["classes"]
    assert len(rows) == 3 and rows == out["written"] and out["csv"]
    assert set(rows[0]) == {"file", "prediction", *[f"prob_{n}" for n in names]}
    assert rows[0]["prediction"] in names
    assert sum(rows[0][f"prob_{n}"] for n in names) == pytest.approx(1.0, abs=1e-5)
    # predict's probabilities are the model's on load_run's preprocessing
    assert [rows[0][f"prob_{n}"] for n in names] == pytest.approx(out["probabilities"],
                                                                  abs=1e-5)
    assert "train.epochs" in out["refused"]


def test_importing_medxfer_keeps_the_python_api_lazy():
    code = ("import sys, medxfer; assert 'run' in dir(medxfer); "
            "print('torch' in sys.modules, 'medxfer.python_api' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_predict_gives_a_segmentation_runs_mask_files(tmp_path):
    run = make_run(tmp_path / "run", SEG_3D, spatial_dims=3, num_classes=3)
    volumes = [write_volume(tmp_path / "in" / f"{n}.nii.gz", seed=i)
               for i, n in enumerate(["a", "b"])]
    with pytest.raises(ConfigError, match="output=FOLDER"):
        medxfer.predict(run.run_dir, volumes)
    with pytest.warns(medxfer.MedxferWarning, match="has not finished"):
        masks = medxfer.predict(run.run_dir, volumes, output=tmp_path / "masks")
    assert masks == [tmp_path / "masks" / "a_mask.nii.gz", tmp_path / "masks" / "b_mask.nii.gz"]
    assert all(m.is_file() for m in masks)


def test_load_run_preprocesses_a_file_into_the_models_input(tmp_path):
    run = make_run(tmp_path / "run", SEG_3D, spatial_dims=3, num_classes=3)
    loaded = medxfer.load_run(run.run_dir)
    x = loaded.preprocess(write_volume(tmp_path / "a.nii.gz", (24, 32, 16)))
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, 24, 32, 16)
    assert abs(float(x.mean())) < 1e-3  # z-scored (data.preprocess.intensity=zscore)
    with torch.no_grad():
        assert tuple(loaded.model(x[None]).shape) == (1, 3, 24, 32, 16)


def test_errors_are_medxfer_exceptions_not_exits(tmp_path):
    with pytest.raises(CheckpointError, match="not a finished medxfer run"):
        medxfer.load_run(tmp_path)
    with pytest.raises(ConfigError, match="overrides must be a dict"):
        medxfer.run(overrides="train.epochs=1")
    with pytest.raises(ConfigError, match="train.epochs"):
        medxfer.run({"train": {"epochs": 0}}, output=tmp_path / "r")
    assert not (tmp_path / "r").exists()
