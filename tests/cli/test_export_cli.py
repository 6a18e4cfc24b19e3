"""`medxfer export`: exit codes, default output folder, no overwriting."""

from __future__ import annotations

import json

from medxfer.cli import main
from tests.workflows.export.helpers import SEG_3D, make_run


def test_export_writes_into_the_run_by_default_and_never_overwrites(tmp_path, capsys):
    run = make_run(tmp_path / "run", SEG_3D, spatial_dims=3, num_classes=3).run_dir
    assert main(["export", "--run", str(run), "--format", "torchscript"]) == 0
    out = run / "export" / "torchscript"
    assert (out / "model.ts").is_file()
    assert json.loads((out / "export.json").read_text(encoding="utf-8"))["format"] == "torchscript"
    assert "max |logit difference|" in capsys.readouterr().err
    before = (out / "model.ts").stat().st_mtime_ns
    assert main(["export", "--run", str(run), "--format", "torchscript"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (out / "model.ts").stat().st_mtime_ns == before


def test_export_bundle_to_a_chosen_folder(tmp_path):
    run = make_run(tmp_path / "run", SEG_3D, spatial_dims=3, num_classes=3).run_dir
    out = tmp_path / "bundle"
    assert main(["export", "--run", str(run), "--format", "monai-bundle", "-o", str(out)]) == 0
    assert (out / "configs" / "inference.json").is_file()
    assert (out / "configs" / "metadata.json").is_file()
    assert (out / "models" / "model.ts").is_file()
    (tmp_path / "plain").mkdir()
    assert out.stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


def test_export_errors_exit_2_with_a_message(tmp_path, capsys):
    run = make_run(tmp_path / "run", SEG_3D, spatial_dims=3, num_classes=3).run_dir
    assert main(["export", "--run", str(run), "--format", "tflite",
                 "-o", str(tmp_path / "x")]) == 2
    assert "torchscript, onnx, monai-bundle" in capsys.readouterr().err
    assert main(["export", "--run", str(tmp_path / "nope"), "--format", "onnx",
                 "-o", str(tmp_path / "y")]) == 2
    assert "not a finished medxfer run" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
