"""One writer per output folder: an advisory lock that ``medxfer run`` and ``compare`` hold
on their ``--output`` for as long as they write there.

Two processes writing one folder (a second ``run`` started before the first had written
anything, or ``--resume`` of a run that is still training) both finished "successfully"
and left a folder that mixed their results. The lock is ``fcntl.flock`` on a file in the
folder: the kernel releases it when the process ends, however it ends, so a killed run
never leaves the folder locked (the file itself stays, and is ignored).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from medxfer.errors import ConfigError
from medxfer.io import reported_as_output_error

LOCK_NAME = ".medxfer.lock"


def entries(folder: Path) -> list[Path]:
    """What ``folder`` holds, apart from its lock file."""
    return [p for p in folder.iterdir() if p.name != LOCK_NAME]


@contextmanager
def locked_folder(folder: Path, *, option: str = "--output") -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) for the body of the ``with``. The lock
    file, and a folder made for it that holds nothing else at the end, are removed again.

    Raises:
        ConfigError: when another process holds it, naming that process.
        OutputError: when the folder cannot be made or written (a read-only or full disk,
            no permission).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no advisory locks, as before
        yield
        return
    created = not folder.exists()
    path = folder / LOCK_NAME
    with reported_as_output_error(folder):
        folder.mkdir(parents=True, exist_ok=True)
        made = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise ConfigError(
                f"{option} {str(folder)!r} is in use by another medxfer process (PID "
                f"{holder}); wait for it to end, or choose another folder") from None
        with reported_as_output_error(folder):
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        held = made and _holds(fd)
        os.close(fd)  # releases the lock
        if held:
            path.unlink(missing_ok=True)
        if created and folder.is_dir() and not entries(folder):
            try:
                folder.rmdir()
            except OSError:  # another process wrote there meanwhile
                pass


def _holds(fd: int) -> bool:
    """Whether this process wrote its PID into the lock file ``fd`` (it holds the lock)."""
    return os.pread(fd, 32, 0).decode(errors="replace").strip() == str(os.getpid())
