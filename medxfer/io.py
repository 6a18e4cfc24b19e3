"""Atomic file writes (a reader never sees a half-written file, a crash leaves the old one),
writes that fail for want of space or permission reported as one
:class:`~medxfer.errors.OutputError`, and reading back the JSON records a run writes."""

from __future__ import annotations

import errno
import json
import os
import pickle
import pickletools
import re
import shutil
import socket
import tempfile
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from medxfer.errors import CheckpointError, OutputError


def current_umask() -> int:
    """The process's umask (read from ``/proc`` where possible, so it is never changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The permissions a plainly created file (or folder) gets under the current umask;
    ``tempfile`` creates its files 0600 and folders 0700, which must not leak into outputs."""
    return (0o777 if directory else 0o666) & ~current_umask()


# this machine in temporary names: a process id says nothing about another machine's
# processes (a run folder on a shared filesystem)
_HOST = re.sub(r"[^A-Za-z0-9_]", "", socket.gethostname())[:32] or "host"


def new_temporary(path: str | os.PathLike[str], *, suffix: str = ".tmp",
                  directory: bool = False, parent: str | os.PathLike[str] | None = None) -> Path:
    """Create an empty temporary file (or folder) to be renamed to ``path`` once written.

    It is hidden, named ``.NAME.<host>-<pid>.<random><suffix>`` after ``path`` and the
    writing process, in ``parent`` (default: beside ``path``), with the permissions of a
    plainly created one. A writer killed before its rename leaves it behind; so first the
    temporaries for ``path`` in ``parent`` whose process (on this machine) is no longer
    running are removed. Those of running processes are never touched.
    """
    path = Path(path)
    parent = Path(parent) if parent is not None else path.parent
    _remove_orphans(parent, path.name, suffix)
    prefix = f".{path.name}.{_HOST}-{os.getpid()}."
    if directory:
        tmp = tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
        os.close(fd)
    os.chmod(tmp, default_mode(directory=directory))  # tempfile makes them 0600 / 0700
    return Path(tmp)


def _remove_orphans(parent: Path, name: str, suffix: str) -> None:
    """Remove the temporaries of :func:`new_temporary` for ``name`` left by dead processes."""
    orphan = re.compile(rf"\.{re.escape(name)}\.{_HOST}-(\d+)\.[a-z0-9_]+{re.escape(suffix)}")
    prefix = f".{name}.{_HOST}-"
    try:
        entries = [entry for entry in os.scandir(parent) if entry.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        match = orphan.fullmatch(entry.name)
        if match is None or _process_running(int(match.group(1))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass  # removed meanwhile, or not ours to remove


def _process_running(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (if unsure: yes)."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # PermissionError: another user's process
        return True
    return True


@contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w",
                encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync and rename it into place.

    The file gets the permissions of a plainly created one (0644 under umask 022). The
    temporary file is made by :func:`new_temporary` (which removes those of killed writers).
    On failure it is removed and ``path`` is left as it was.

    Args:
        path: The final file.
        mode: ``"w"`` or ``"wb"``.
        encoding: Text encoding (ignored for binary mode).

    Raises:
        OutputError: when the disk is full or read-only, or permission is denied.
    """
    path = Path(path)
    with reported_as_output_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temporary(path)
        try:
            with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json_text(obj))


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON text the run's records are written in."""
    return json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"


#: errno -> what is wrong and what to do, for a write that cannot succeed as things are
_CANNOT_WRITE = {
    errno.ENOSPC: ("no space is left on its disk",
                   "free some space there, or choose a folder on another disk"),
    errno.EDQUOT: ("your disk quota is used up",
                   "free some space within it, or choose a folder elsewhere"),
    errno.EFBIG: ("the file would be larger than its file system allows",
                  "choose a folder on another disk"),
    errno.EROFS: ("its file system is read-only", "choose a folder on a writable disk"),
    errno.EACCES: ("permission denied", "make it writable for you, or choose another folder"),
    errno.EPERM: ("operation not permitted",
                  "make it writable for you, or choose another folder"),
}
#: The errors above that only a write gives (permission is also refused to readers)
_ONLY_WRITES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def output_error(exc: BaseException, path: str | os.PathLike[str] | None = None, *,
                 writing: bool = True,
                 near: str | os.PathLike[str] | None = None) -> OutputError | None:
    """The :class:`OutputError` for ``exc`` when it, or what caused it, is a write refused
    for want of space or permission; else ``None``.

    Libraries wrap the ``OSError`` (``torch.save`` raises a ``RuntimeError`` in whose
    context it is, safetensors names it as ``(os error 28)``), so the chain of causes is
    searched.

    Args:
        exc: What was raised.
        path: The file or folder written (default: the one the ``OSError`` names).
        writing: Whether ``exc`` certainly comes from a write. If not, a refused
            permission (which reads get too) is reported as such for the file the
            ``OSError`` names, not as a write.
        near: The folder named when neither ``path`` nor the ``OSError`` names a file.
    """
    cause = _refused_write(exc, _CANNOT_WRITE)
    if cause is None:
        return None
    what, todo = _CANNOT_WRITE[cause.errno]
    if not writing and cause.errno not in _ONLY_WRITES:
        if not cause.filename:
            return None
        return OutputError(f"{str(cause.filename)!r}: {what}; make it accessible to you, or "
                           "choose another file or folder")
    target = next((p for p in (path, cause.filename, near) if p is not None), None)
    where = f" {str(target)!r}" if target else ""
    return OutputError(f"cannot write{where}: {what}; {todo}")


def _refused_write(exc: BaseException | None, errnos: Any) -> OSError | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OutputError):
            return None  # reported already
        if isinstance(exc, OSError):
            if exc.errno in errnos:
                return exc
        else:
            named = re.search(r"\(os error (\d+)\)", str(exc))
            if named and int(named.group(1)) in errnos:
                code = int(named.group(1))
                return OSError(code, os.strerror(code))
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ \
            else exc.__context__
    return None


@contextmanager
def reported_as_output_error(path: str | os.PathLike[str]) -> Iterator[None]:
    """Run the body, which writes ``path``; a failure for want of space or permission
    becomes an :class:`OutputError` naming ``path``."""
    try:
        yield
    except Exception as exc:
        problem = output_error(exc, path)
        if problem is None:
            raise
        raise problem from None


def read_json_object(path: str | os.PathLike[str], *, what_to_do: str) -> dict[str, Any]:
    """A JSON file that must hold an object (a run's record, such as ``model.json``).

    Raises:
        CheckpointError: naming the file, why it is unreadable, and ``what_to_do``.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable ({exc}); {what_to_do}") from None
    return data


def why_unloadable(path: str | os.PathLike[str], exc: BaseException, *,
                   what: str = "PyTorch file",
                   refused: str = "it is not a plain weights file") -> str:
    """Why ``torch.load(path, weights_only=True)`` (which raised ``exc``) failed, in a few
    words that complete "file X ...": empty, unreadable, holding objects a safe load
    refuses (``refused`` says what that means), or truncated/damaged/not a ``what``.

    PyTorch's own text is left out on purpose: for a refused object it advises loading the
    file with ``weights_only=False``, which would run whatever code the file holds.
    """
    try:
        with open(path, "rb") as handle:
            empty = not handle.read(1)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if empty:
        return "is empty (0 bytes)"
    if isinstance(exc, pickle.UnpicklingError) and _intact_pickle(path):
        return (f"is intact but holds objects that a safe (weights-only) load refuses (a "
                f"pickle of Python objects, which could run code), so {refused} and is not "
                "loaded")
    return f"is truncated or damaged, or not a {what}"


def _intact_pickle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is whole: a zip archive (PyTorch's format) whose every member
    passes its CRC check, or complete pickles (a plain ``pickle.dump``, or the five of
    PyTorch's legacy format, which its tensors' bytes follow). Nothing in it is
    unpickled."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return archive.testzip() is None
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            for _ in range(5):
                for _ in pickletools.genops(handle):  # reads opcodes up to STOP, runs none
                    pass
                if handle.tell() >= size:
                    break
        return True
    except Exception:  # noqa: BLE001 - whatever stops the walk means it is damaged
        return False


@contextmanager
def quiet_weights_only_load() -> Iterator[None]:
    """Silence PyTorch's warning about a pickle protocol it did not write, which a
    weights-only load of a foreign file gives before refusing it (it asks the user to
    file an issue with PyTorch; the refusal itself is reported as :func:`why_unloadable`
    says)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                category=UserWarning)
        yield
