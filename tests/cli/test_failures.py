"""Every failure one clear message and exit 2 (issue 27): user text printed as written,
flags as the conventions have them, outputs that cannot be written, SIGTERM, hostile
checkpoints, third-party noise."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import pytest

from medxfer.cli import main
from medxfer.config import load_config, write_resolved_config
from tests.helpers import stop_run_pipeline

TINY = ["--set", "model.backbone.name=basic_cnn", "--set", "model.backbone.channels=[4,8]",
        "--set", "data.augment.preset=none", "--set", "train.epochs=2",
        "--set", "train.batch_size=8", "--set", "eval.bootstrap=0", "--set", "data.limit=16"]


def one_line(text: str) -> str:
    """``text`` with the line breaks rich may put into a long message undone."""
    return " ".join(text.split())


# --- user text is never markup ----------------------------------------------------------------

def test_paths_are_printed_as_written_not_as_markup_or_emoji(tmp_path, capsys):
    path = tmp_path / "a:thumbs_up:b[bold]c[/bold]"
    assert main(["data", "inspect", str(path)]) == 2
    assert f"error: data path '{path}' does not exist" in one_line(capsys.readouterr().err)


def test_a_file_read_as_a_manifest_is_not_quoted(tmp_path, capsys):
    manifest = tmp_path / "passwd.csv"
    manifest.write_text("root:x:0:0:s3cr3t:/root:/bin/bash\ndaemon:x:1:1::/:/bin/sh\n")
    assert main(["data", "inspect", str(manifest)]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"manifest '{manifest}' has no 'image' column (data.image_key) among its 1 " \
        "column; set data.image_key" in err
    assert "s3cr3t" not in err and "/bin/bash" not in err


# --- config files past their bounds -----------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "config show"])
def test_a_config_bomb_is_refused_before_torch_is_imported(tmp_path, command):
    """The refusal takes milliseconds; importing torch and MONAI first took seconds and a
    gigabyte."""
    import subprocess
    import sys

    from tests.test_bounded_yaml import ALIAS_BOMB

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(ALIAS_BOMB)
    args = [*command.split(), str(bomb), "--set", "train.epochs=1"]
    code = ("import sys\nfrom medxfer.cli import main\ncode = main(%r)\n"
            "print('loaded', sorted(m for m in ('torch', 'monai') if m in sys.modules), code)"
            % (args,))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "loaded [] 2", result.stderr
    assert f"error: config file '{bomb}' expands to more than 100000 values" in one_line(
        result.stderr)


# --- flags ------------------------------------------------------------------------------------

def test_flags_show_no_type_in_help(capsys):
    assert main(["run", "--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for flag in ("--resume", "--check", "--help"):
        line = next(ln for ln in lines if f"{flag} " in ln)
        assert "<bool>" not in line, line
    assert any("--nproc" in ln and "<int" in ln for ln in lines)  # options keep their type


@pytest.mark.parametrize("args", [["--resume", "true", "--output", "OUT"],
                                  ["--check", "yes"], ["--output", "OUT", "--resume", "False"]])
def test_a_value_after_a_flag_is_refused_not_read_as_the_config(args, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *args]) == 2
    err = one_line(capsys.readouterr().err)
    flag = next(a for a in args if a in ("--resume", "--check"))
    assert f"{flag} is a flag and takes no value" in err
    assert f"write {flag} alone to turn it on" in err
    assert "config file" not in err and not (tmp_path / "OUT").exists()


# --- outputs that cannot be written -----------------------------------------------------------

def test_a_read_only_output_folder_is_one_message_and_exit_2(tmp_path, capsys, monkeypatch):
    read_only = tmp_path / "ro"
    mkdir = Path.mkdir

    def refused_under_read_only(self, *args, **kwargs):
        if self == read_only or read_only in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refused_under_read_only)
    assert main(["run", "--output", str(read_only / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert one_line(err) == (f"error: cannot write '{read_only / 'run'}': its file system is "
                             "read-only; choose a folder on a writable disk")


@pytest.mark.slow
def test_a_full_disk_keeps_the_last_checkpoint_and_says_how_to_resume(tmp_path, capsys,
                                                                      monkeypatch):
    import torch

    from medxfer.training.checkpoints import LAST_STATE, load_training_state

    save, saves = torch.save, []

    def full_on_the_second_checkpoint(obj, handle, *args, **kwargs):
        if "last.pt" in str(getattr(handle, "name", "")):
            saves.append(handle.name)
            if len(saves) == 2:
                handle.write(b"half a checkpoint")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_on_the_second_checkpoint)
    run = tmp_path / "run"
    assert main(["run", "--output", str(run), *TINY]) == 2
    err = one_line(capsys.readouterr().err)
    assert err[err.index("error:"):] == (
        f"error: cannot write '{run / LAST_STATE}': no space is left on its disk; "
        "free some space there, or choose a folder on another disk. The run's last "
        "checkpoint is intact: once it can be written, continue it with "
        f"`medxfer run --resume --output {run}`")
    assert load_training_state(run)["epoch"] == 0
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", save)
    assert main(["run", "--resume", "--output", str(run)]) == 0
    assert (run / "metrics.json").is_file()


def test_an_unforeseen_full_disk_names_the_output_folder(tmp_path, capsys, monkeypatch):
    """A library's own write (TensorBoard's, say) that fails on a full disk."""
    import medxfer.workflows.run_folder as run_folder

    def full(config, output, **kwargs):
        raise RuntimeError("flush failed") from OSError(errno.ENOSPC, "No space left")

    monkeypatch.setattr(run_folder, "run_pipeline", full)
    run = tmp_path / "run"
    assert main(["run", "--output", str(run), *TINY]) == 2
    assert one_line(capsys.readouterr().err).startswith(
        f"error: cannot write '{run}': no space is left on its disk")
    assert not run.exists()  # nothing to resume, nothing left


#: Run in the mount namespace after medxfer: what it left on the disk, as one JSON line.
_LEFT_ON_DISK = """
import json, sys
from pathlib import Path
from medxfer.training.checkpoints import has_checkpoint, load_training_state
run = Path(sys.argv[1])
print("LEFT", json.dumps({
    "temporaries": [p.name for p in run.rglob("*") if p.name.endswith(".tmp")],
    "epoch": load_training_state(run)["epoch"] if run.is_dir() and has_checkpoint(run)
    else None}))
"""


def _run_on_a_small_disk(tmp_path: Path, options: str, *args: str):
    """``medxfer run --output DISK/run *args`` with a tmpfs mounted (``options``) on DISK
    in a user and mount namespace of its own (skips where that is not allowed); returns
    the run's exit code, its stderr, DISK and what it left there (:data:`_LEFT_ON_DISK`)."""
    import json
    import shutil
    import subprocess
    import sys

    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux)")
    disk = tmp_path / "disk"
    disk.mkdir()
    script = ('mount -t tmpfs -o "$1" tmpfs "$2" || exit 97; run="$2/run"; shift 2; '
              '"$@" 2>&1 >/dev/null; code=$?; echo "EXIT $code"; '
              f'{sys.executable} -c "$LEFT_ON_DISK" "$run"')
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", options,
         str(disk), sys.executable, "-m", "medxfer", "run", "--output", str(disk / "run"),
         *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
             "LEFT_ON_DISK": _LEFT_ON_DISK})
    if done.returncode == 97 or done.stderr.startswith("unshare:"):
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {done.stderr.strip()}")
    output, _, rest = done.stdout.rpartition("EXIT ")
    code, _, left = rest.partition("\n")
    assert left.startswith("LEFT "), done.stdout + done.stderr
    return int(code), output, disk, json.loads(left.removeprefix("LEFT "))


@pytest.mark.slow
def test_a_real_read_only_disk(tmp_path):
    code, err, disk, left = _run_on_a_small_disk(tmp_path, "ro,size=1m", *TINY)
    assert code == 2, err
    assert one_line(err) == (f"error: cannot write '{disk / 'run'}': its file system is "
                             "read-only; choose a folder on a writable disk")


@pytest.mark.slow
@pytest.mark.parametrize("size", ["16k", "96k"])
def test_a_real_full_disk(tmp_path, size):
    """Wherever the disk fills up: one message naming what could not be written, no
    temporary file left, and a checkpoint left behind is whole."""
    code, err, disk, left = _run_on_a_small_disk(tmp_path, f"size={size}", *TINY)
    assert code == 2, err
    error = one_line(err[err.index("error:"):])
    assert error.startswith(f"error: cannot write '{disk / 'run'}") and \
        "no space is left on its disk" in error, err
    assert "Traceback" not in err and "SafetensorError" not in err
    assert left["temporaries"] == []
    assert ("checkpoint is intact" in error) == (left["epoch"] is not None)


# --- SIGTERM ----------------------------------------------------------------------------------

def _terminated_pipeline(monkeypatch, write_checkpoint: bool) -> None:
    """``run``'s pipeline writes its first files (and a checkpoint) and gets SIGTERM."""

    def sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the signal arrives first
        raise AssertionError("SIGTERM did not stop the run")

    stop_run_pipeline(monkeypatch, write_checkpoint=write_checkpoint, stop=sigterm)


def test_sigterm_after_a_checkpoint_says_how_to_resume_and_exits_143(tmp_path, capsys,
                                                                     monkeypatch):
    _terminated_pipeline(monkeypatch, write_checkpoint=True)
    run = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)
    assert main(["run", "--output", str(run), *TINY]) == 143
    assert one_line(capsys.readouterr().err) == (
        f"error: terminated (SIGTERM); continue the run with `medxfer run --resume --output "
        f"{run}`")
    assert (run / "checkpoints" / "last.pt").is_file()
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_before_a_checkpoint_removes_the_run_and_exits_143(tmp_path, capsys,
                                                                   monkeypatch):
    _terminated_pipeline(monkeypatch, write_checkpoint=False)
    run = tmp_path / "run"
    assert main(["run", "--output", str(run), *TINY]) == 143
    assert "error: terminated (SIGTERM) before the run saved a checkpoint" in one_line(
        capsys.readouterr().err)
    assert not run.exists()


@pytest.mark.slow
def test_sigterm_stops_a_real_run_with_a_message(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "medxfer", "run", "--output", str(run),
                             *TINY, "--set", "train.epochs=50"], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (run / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert f"error: terminated (SIGTERM); continue the run with `medxfer run --resume " \
        f"--output {run}`" in one_line(err)
    assert "Traceback" not in err


# --- hostile checkpoints ----------------------------------------------------------------------

class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo never run",))


def test_a_hostile_checkpoint_is_called_what_it_is(tmp_path, capsys):
    import pickle

    run = tmp_path / "run"
    run.mkdir()
    write_resolved_config(load_config(None, [a for a in TINY if a != "--set"]), run)
    (run / "splits.csv").write_text("id,split\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(
        pickle.dumps({"model": _RunsCode(), "epoch": 0}, protocol=4))
    assert main(["run", "--resume", "--output", str(run)]) == 2
    err = one_line(capsys.readouterr().err)
    assert f"checkpoint '{run / 'checkpoints' / 'last.pt'}' is intact but holds objects " \
        "that a safe (weights-only) load refuses" in err
    assert "truncated" not in err and "file an issue" not in err and "Warning" not in err


# --- third-party noise ------------------------------------------------------------------------

def test_itk_warnings_do_not_reach_the_user(tmp_path, capfd):
    """A series with a missing slice: ITK warns of its non-uniform sampling on stderr."""
    import numpy as np

    from medxfer.data.readers import read_dicom_series
    from tests.data.datafiles import write_dicom_series

    files = write_dicom_series(tmp_path / "series", np.zeros((4, 6, 5), np.int16))
    files[2].unlink()
    capfd.readouterr()
    read_dicom_series(tmp_path / "series")
    assert "WARNING" not in capfd.readouterr().err


def test_pydicom_warnings_about_odd_values_do_not_reach_the_user(tmp_path, capsys):
    import warnings

    import numpy as np
    import pydicom

    from tests.data.datafiles import write_dicom_series

    for path in write_dicom_series(tmp_path / "series", np.zeros((3, 6, 5), np.int16)):
        dataset = pydicom.dcmread(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset.StudyInstanceUID = "1.2.840.100 8.1"  # a space: not a valid UID
        dataset.save_as(path)
    with warnings.catch_warnings(record=True) as shown:  # what reached showwarning
        warnings.simplefilter("always")
        assert main(["data", "inspect", str(tmp_path / "series"), "-o", str(tmp_path)]) == 0
    assert not [str(w.message) for w in shown if "pydicom" in w.filename]
    assert "1.2.840.100 8.1" not in capsys.readouterr().err
