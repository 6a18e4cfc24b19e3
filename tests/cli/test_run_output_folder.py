"""`medxfer run` and `compare` and their --output folder: one writer at a time, a run killed
before its first checkpoint starts again, a finished run is never resumed over."""

from __future__ import annotations

import os

import pytest

from medxfer.cli import main
from medxfer.locking import LOCK_NAME, locked_folder

QUICK = ["--set", "model.backbone.name=basic_cnn", "--set", "train.epochs=1",
         "--set", "eval.bootstrap=10", "--set", "data.limit=16"]


def test_a_folder_another_process_writes_is_refused(tmp_path, capsys):
    """The second of two runs started into one folder refused nothing (the first had not
    written yet), and both "succeeded" with their results mixed."""
    out_dir = tmp_path / "out"
    with locked_folder(out_dir):  # as a run that is writing there holds it
        assert main(["run", "--output", str(out_dir), *QUICK]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"--output '{out_dir}' is in use by another medxfer process (PID " \
               f"{os.getpid()})" in err
        assert main(["run", "--output", str(out_dir), "--resume", *QUICK]) == 2
        assert "in use by another medxfer process" in capsys.readouterr().err
        config = tmp_path / "study.yaml"
        config.write_text("model: {backbone: {name: basic_cnn}}\n")
        assert main(["compare", str(config), "--backbones", "basic_cnn", "--strategies",
                     "scratch", "--seeds", "1", "--output", str(out_dir)]) == 2
        assert "in use by another medxfer process" in capsys.readouterr().err
        assert [p.name for p in out_dir.iterdir()] == [LOCK_NAME]
    assert not out_dir.exists()  # the lock's folder, made for it, goes with it


def test_the_lock_goes_with_its_process(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with locked_folder(out_dir):
        pass
    with locked_folder(out_dir):  # released: taken again at once
        (out_dir / "x").write_text("x")
    assert out_dir.is_dir()  # it was there before: kept


@pytest.mark.slow
@pytest.mark.parametrize("resume", [False, True])
def test_a_run_killed_before_its_first_checkpoint_starts_again(tmp_path, capsys, resume):
    """SIGKILL or SIGTERM before the first checkpoint left config.yaml and splits.csv; the
    same command then said "already holds files", and --resume "start it again without
    --resume in a new --output folder"."""
    out_dir = tmp_path / "out"
    (out_dir / "tensorboard").mkdir(parents=True)
    for name in ("splits.csv", "model.json", LOCK_NAME):
        (out_dir / name).write_text("left by the killed run")
    (out_dir / "config.yaml").write_text("# left by the killed run\n")
    assert main(["run", "--output", str(out_dir), *QUICK, *(["--resume"] if resume else [])]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "holds a run that stopped before its first checkpoint (nothing to resume); " \
           "starting it again there" in err
    assert (out_dir / "metrics.json").is_file()
    assert "left by the killed run" not in (out_dir / "splits.csv").read_text()


def test_a_folder_with_other_files_is_still_refused(tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for name in ("config.yaml", "my_notes.txt"):
        (out_dir / name).write_text("mine")
    assert main(["run", "--output", str(out_dir), *QUICK]) == 2
    assert "already holds files; results are never overwritten" in capsys.readouterr().err
    assert sorted(p.name for p in out_dir.iterdir() if p.name != LOCK_NAME) == \
        ["config.yaml", "my_notes.txt"]


@pytest.mark.slow
def test_resuming_a_finished_run_leaves_it_as_it_is(tmp_path, capsys):
    out_dir = tmp_path / "out"
    assert main(["run", "--output", str(out_dir), *QUICK]) == 0
    before = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["run", "--output", str(out_dir), "--resume", *QUICK]) == 0
    assert "has finished (its metrics.json is written): nothing to resume" in \
        " ".join(capsys.readouterr().err.split())
    assert {p: p.stat().st_mtime_ns for p in out_dir.rglob("*") if p.is_file()} == before


def test_resume_with_a_changed_setting_names_it(tmp_path, capsys):
    out_dir = tmp_path / "out"
    (out_dir / "checkpoints").mkdir(parents=True)
    (out_dir / "checkpoints" / "last.pt").write_bytes(b"x")  # a run that can be resumed
    assert main(["run", "--output", str(out_dir), *QUICK, "--check"]) == 0
    from medxfer.config import config_to_yaml, load_config

    saved = load_config(None, [q for q in QUICK if q != "--set"])
    (out_dir / "config.yaml").write_text(config_to_yaml(saved), encoding="utf-8")
    capsys.readouterr()
    assert main(["run", "--output", str(out_dir), "--resume",
                 "--set", "train.epochs=4"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "differs from" in err and "at train.epochs (1 in the run, 4 given);" in err
