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
