"""Atomic writes: whole files only, and the permissions of a plainly created file."""

from __future__ import annotations

import os
import stat

import pytest

from medxfer.io import atomic_open, atomic_write_json, atomic_write_text, current_umask, default_mode


@pytest.fixture
def umask():
    """Set the process umask for one test, then restore it."""
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_follow_the_umask_like_plain_ones(tmp_path, umask, mask, expected):
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert mode(tmp_path / "a.txt") == mode(tmp_path / "plain.txt") == expected
    assert current_umask() == mask
    assert default_mode(directory=True) == 0o777 & ~mask


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(target) as handle:
            handle.write("half")
            raise RuntimeError("disk full")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_read_json_object_names_the_file_and_what_to_do(tmp_path):
    import pytest

    from medxfer.errors import CheckpointError
    from medxfer.io import read_json_object

    good = tmp_path / "good.json"
    good.write_text('{"a": 1}', encoding="utf-8")
    assert read_json_object(good, what_to_do="x") == {"a": 1}
    for name, text in (("broken.json", "{bad"), ("list.json", "[1, 2]")):
        (tmp_path / name).write_text(text, encoding="utf-8")
        with pytest.raises(CheckpointError, match=rf"{name} is unreadable .*; train it again"):
            read_json_object(tmp_path / name, what_to_do="train it again")


# --- temporaries left by killed writers ----------------------------------------------------

@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The id of a process that has exited."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    """The id of a running process other than this one."""
    import subprocess

    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def leftover(parent, target: str, pid: int, suffix: str = ".tmp", directory: bool = False,
             tag: str = "k1ll3d_x"):
    """What a writer of ``target`` with process id ``pid`` leaves when it is killed."""
    from medxfer.io import _HOST

    path = parent / f".{target}.{_HOST}-{pid}.{tag}{suffix}"
    if directory:
        path.mkdir(parents=True)
        (path / "half.bin").write_bytes(b"x" * 100)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 100)
    return path


def test_temporaries_are_named_after_the_target_and_the_writing_process(tmp_path):
    from medxfer.io import new_temporary

    tmp = new_temporary(tmp_path / "out.json")
    assert tmp.parent == tmp_path and tmp.is_file() and tmp.name.endswith(".tmp")
    assert tmp.name.startswith(".out.json.") and f"-{os.getpid()}." in tmp.name
    assert mode(tmp) == default_mode()
    folder = new_temporary(tmp_path / "export", suffix=".partial", directory=True)
    assert folder.is_dir() and mode(folder) == default_mode(directory=True)


def test_a_write_removes_its_targets_temporaries_of_dead_processes_only(tmp_path, dead_pid,
                                                                        live_pid):
    dead = leftover(tmp_path, "m.json", dead_pid)
    running = leftover(tmp_path, "m.json", live_pid)
    mine = leftover(tmp_path, "m.json", os.getpid())
    other_target = leftover(tmp_path, "other.json", dead_pid)
    other_host = tmp_path / f".m.json.elsewhere-{dead_pid}.abcdefgh.tmp"
    other_host.write_bytes(b"x")
    not_ours = tmp_path / ".m.json.abcdefgh.tmp"  # no process id in its name
    not_ours.write_bytes(b"x")
    atomic_write_json(tmp_path / "m.json", {"a": 1})
    assert not dead.exists()
    for kept in (running, mine, other_target, other_host, not_ours):
        assert kept.exists(), kept.name
    atomic_write_json(tmp_path / "other.json", {})
    assert not other_target.exists() and running.exists()


def test_a_new_checkpoint_removes_the_half_written_one_of_a_killed_run(tmp_path, dead_pid,
                                                                       live_pid):
    import torch

    from medxfer.training.checkpoints import save_model, save_training_state

    checkpoints = tmp_path / "run" / "checkpoints"
    dead, running = (leftover(checkpoints, "last.pt", pid) for pid in (dead_pid, live_pid))
    save_training_state(tmp_path / "run", {"model": {}, "epoch": 0})
    assert not dead.exists() and running.exists()
    dead = leftover(tmp_path / "run", "model.safetensors", dead_pid)
    save_model(tmp_path / "run", torch.nn.Linear(2, 1), {})
    assert not dead.exists()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoints", "model.json", "model.safetensors"]


def test_an_export_or_ensemble_removes_the_folders_of_killed_ones(tmp_path, dead_pid, live_pid):
    from medxfer.workflows.ensemble import _staging_dir
    from medxfer.workflows.export.common import staged_folder

    # one per killed try
    dead = [leftover(tmp_path, "export", dead_pid, directory=True, tag=tag)
            for tag in ("try1xxxx", "try2xxxx")]
    running = leftover(tmp_path, "export", live_pid, directory=True)
    with staged_folder(tmp_path / "export") as staging:
        (staging / "model.pt").write_bytes(b"m")
    assert not any(path.exists() for path in dead) and running.exists()
    assert (tmp_path / "export" / "model.pt").is_file()

    dead = leftover(tmp_path, "ensemble", dead_pid, suffix=".partial", directory=True)
    running = leftover(tmp_path, "ensemble", live_pid, suffix=".partial", directory=True)
    staging = _staging_dir(tmp_path / "ensemble")
    assert not dead.exists() and running.exists() and (staging / "figures").is_dir()


# --- writes refused for want of space or permission ------------------------------------------

def test_a_full_disk_is_one_output_error_naming_the_file_and_the_old_file_stays(tmp_path):
    import errno

    from medxfer.errors import OutputError

    target = tmp_path / "m.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(OutputError) as info:
        with atomic_open(target) as handle:
            handle.write("half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(info.value) == (f"cannot write '{target}': no space is left on its disk; free "
                               "some space there, or choose a folder on another disk")
    assert info.value.exit_code == 2
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_a_read_only_folder_is_one_output_error(tmp_path, monkeypatch):
    import errno
    import tempfile

    from medxfer.errors import OutputError

    def read_only(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(OutputError, match=rf"cannot write '{tmp_path / 'x.txt'}': its file "
                                          "system is read-only; choose a folder on a writable"):
        atomic_write_text(tmp_path / "x.txt", "x")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_library_errors_over_a_full_disk_are_recognised():
    """torch.save raises a RuntimeError with the OSError in its context; safetensors names
    the errno in its message."""
    import torch
    from safetensors import SafetensorError

    from medxfer.io import output_error

    with open("/dev/full", "wb", buffering=0) as full:
        try:
            torch.save({"w": torch.zeros(100_000)}, full)
        except Exception as exc:  # noqa: BLE001 - whatever torch raises
            saved = exc
    assert "no space is left" in str(output_error(saved, "/x/last.pt"))
    written = SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")
    assert str(output_error(written, "/x/model.safetensors")).startswith(
        "cannot write '/x/model.safetensors': no space is left")
    assert output_error(RuntimeError("shape mismatch")) is None


def test_a_refused_permission_counts_as_a_write_only_where_it_is_one():
    import errno

    from medxfer.io import output_error

    denied = PermissionError(errno.EACCES, "Permission denied", "/data/scan.png")
    assert str(output_error(denied, writing=False)) == (  # could be a read
        "'/data/scan.png': permission denied; make it accessible to you, or choose another "
        "file or folder")
    assert str(output_error(denied)).startswith("cannot write '/data/scan.png': permission")
    assert output_error(PermissionError(errno.EACCES, "Permission denied"), writing=False) \
        is None  # nothing to name
    read_only = OSError(errno.EROFS, "Read-only file system")
    assert str(output_error(read_only, writing=False, near="/runs/a")) == (
        "cannot write '/runs/a': its file system is read-only; choose a folder on a "
        "writable disk")


def test_a_failed_model_write_keeps_the_old_weights_and_sidecar_together(tmp_path,
                                                                         monkeypatch):
    import errno

    import torch

    from medxfer.errors import OutputError
    from medxfer.training import checkpoints

    run = tmp_path / "run"
    checkpoints.save_model(run, torch.nn.Linear(2, 1), {"epoch": 1})
    weights = (run / "model.safetensors").read_bytes()

    def full(handle_text):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoints, "json_text", full)
    with pytest.raises(OutputError, match="no space is left"):
        checkpoints.save_model(run, torch.nn.Linear(2, 1), {"epoch": 2})
    assert (run / "model.safetensors").read_bytes() == weights
    assert (run / "model.json").read_text() == '{\n  "epoch": 1\n}\n'
    assert sorted(p.name for p in run.iterdir()) == ["model.json", "model.safetensors"]


# --- files a weights-only load refuses -------------------------------------------------------

class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("write", ["zip", "legacy", "pickle"])
def test_an_intact_pickle_of_objects_is_called_so_without_torch_s_warning(tmp_path, write):
    import pickle
    import warnings

    import torch

    from medxfer.io import quiet_weights_only_load, why_unloadable

    path = tmp_path / "evil.pt"
    state = {"model": _RunsCode(), "epoch": 0}
    if write == "pickle":
        path.write_bytes(pickle.dumps(state, protocol=4))
    else:
        torch.save(state, path, _use_new_zipfile_serialization=write == "zip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(pickle.UnpicklingError) as info, quiet_weights_only_load():
            torch.load(path, weights_only=True)
    assert not caught, [str(w.message) for w in caught]
    assert why_unloadable(path, info.value).startswith(
        "is intact but holds objects that a safe (weights-only) load refuses")
    path.write_bytes(path.read_bytes()[:-20])  # damaged: not intact any more
    assert why_unloadable(path, info.value).startswith("is truncated or damaged")
