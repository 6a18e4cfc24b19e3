"""`medxfer data pack` from the command line: a run on the pack gives the metrics of a run
on the folder; refusals are one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medxfer.cli import main
from tests.data.layout_fixtures import class_folders

TINY = ["--set", "model.backbone.name=basic_cnn", "--set", "model.backbone.channels=[4,8]",
        "--set", "data.augment.preset=none", "--set", "train.epochs=2",
        "--set", "train.batch_size=8", "--set", "eval.bootstrap=0"]


@pytest.fixture
def folders(tmp_path, shared_data) -> Path:
    return class_folders(tmp_path / "folders", shared_data, per_class=12)


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return " ".join(err[err.index("error:"):].split())


@pytest.mark.slow
def test_a_run_on_the_pack_gives_the_metrics_of_a_run_on_the_folder(folders, tmp_path,
                                                                    capsys):
    pack = tmp_path / "pack"
    assert main(["data", "pack", str(folders), "--output", str(pack),
                 "--shard-size", "20kB"]) == 0
    assert f"--set data.path={pack}" in " ".join(capsys.readouterr().out.split())
    assert main(["data", "pack", str(pack), "--verify"]) == 0
    runs = {}
    for name, data in (("folder", folders), ("pack", pack)):
        out = tmp_path / f"run-{name}"
        assert main(["run", "--output", str(out), *TINY, "--set", f"data.path={data}"]) == 0
        runs[name] = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert runs["pack"]["test"] == runs["folder"]["test"]
    assert runs["pack"]["val"] == runs["folder"]["val"]
    assert [h["train_loss"] for h in runs["pack"]["history"]] == \
        [h["train_loss"] for h in runs["folder"]["history"]]


def test_pack_refuses_an_existing_output_in_one_line(folders, tmp_path, capsys):
    out = tmp_path / "pack"
    out.mkdir()
    (out / "results.csv").write_text("keep")
    assert main(["data", "pack", str(folders), "--output", str(out)]) == 2
    assert "exists and is not empty" in _one_error_line(capsys.readouterr().err)
    assert (out / "results.csv").read_text() == "keep"


def test_pack_refuses_unreadable_data_in_one_line(tmp_path, capsys):
    assert main(["data", "pack", str(tmp_path / "nowhere"), "--output",
                 str(tmp_path / "pack")]) == 2
    assert "does not exist" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "pack").exists()


def test_a_truncated_shard_stops_a_command_in_one_line_naming_it(folders, tmp_path, capsys):
    pack = tmp_path / "pack"
    assert main(["data", "pack", str(folders), "--output", str(pack),
                 "--set", "data.limit=4"]) == 0
    shard = pack / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-1024])
    capsys.readouterr()
    assert main(["data", "inspect", str(pack), "--output", str(tmp_path)]) == 2
    assert "train-000000.tar" in _one_error_line(capsys.readouterr().err)
    assert main(["data", "pack", str(pack), "--verify"]) == 2
    assert "train-000000.tar" in _one_error_line(capsys.readouterr().err)
