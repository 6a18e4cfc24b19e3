"""``medxfer run --nproc N``: start the run under torchrun on this machine.

The launcher runs ``torch.distributed.run`` in-process, as ``torchrun --nnodes 1
--nproc_per_node N -m medxfer run ...`` would, and turns a failed worker into one line
naming the rank and its error (or the signal that killed it). torchrun's agent stops the
other workers as soon as one fails, so nothing is left waiting for a dead peer.

Nothing it starts can be reached from beyond this machine. torch's stores (the rendezvous
store, whose contents torch unpickles, and the process group's) listen on every interface,
whatever address they are given, so the launcher hosts the rendezvous store itself on a
socket bound to 127.0.0.1 and the workers' rank 0 does the same for the process group's
store (:func:`medxfer.training.distributed.session`); gloo and NCCL's bootstrap are bound
to the loopback interface too.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from medxfer.errors import MedxferError

LOOPBACK = "127.0.0.1"


class LaunchError(MedxferError):
    """A worker of a ``--nproc`` run failed; the message names its rank and error."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def torchrun_args(nproc: int, run_args: list[str], port: int) -> list[str]:
    """The ``torchrun`` command line (without the program) for ``medxfer run run_args``,
    one node whose rendezvous store is the one on ``127.0.0.1:port``."""
    return ["--nnodes=1", f"--nproc_per_node={nproc}", "--rdzv-backend=c10d",
            f"--rdzv-endpoint={LOOPBACK}:{port}", f"--rdzv-id={uuid.uuid4()}",
            "--rdzv-conf=is_host=false", f"--local-addr={LOOPBACK}", "--max_restarts=0",
            "--monitor_interval=0.5", "-m", "medxfer", "run", *run_args]


#: The environment of the launch: the workers' rank 0 hosts the process group's store (the
#: agent's shared one would listen on every interface), and gloo and NCCL's bootstrap use
#: the loopback interface (the address this machine's name resolves to, or the first
#: network interface, could be reachable from outside). A value the user set is kept.
_LOOPBACK_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
if sys.platform.startswith("linux"):
    _LOOPBACK_ENV.update(GLOO_SOCKET_IFNAME="lo", NCCL_SOCKET_IFNAME="lo")
elif sys.platform == "darwin":
    _LOOPBACK_ENV["GLOO_SOCKET_IFNAME"] = "lo0"


@contextmanager
def loopback_rendezvous() -> Iterator[int]:
    """Host torchrun's rendezvous store on 127.0.0.1 for the body; yields its port.

    A ``TCPStore`` given only a host name listens on every interface; one given a socket
    (``master_listen_fd``) listens where that socket is bound.
    """
    from torch.distributed import TCPStore

    listener = socket.create_server((LOOPBACK, 0))
    port = listener.getsockname()[1]
    store = TCPStore(LOOPBACK, port, is_master=True, wait_for_workers=False,
                     master_listen_fd=listener.detach())  # the store owns the socket now
    try:
        yield port
    finally:
        del store


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set where the user has not set them, for the body."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _message(failure: Any) -> str:
    message = failure.message
    if isinstance(message, dict):  # torchelastic's error-file record
        message = message.get("message", "")
    return str(message or "")


def _stopped_by_agent(failure: Any) -> bool:
    """Whether the worker died of SIGTERM, the signal torchrun's agent sends to stop the
    other workers once one has failed."""
    return failure.exitcode == -15


def first_failure(exc: Any) -> tuple[int, Any]:
    """The rank whose failure caused the others.

    A worker that lost its connection to a failed peer (see
    :func:`medxfer.training.distributed.is_peer_failure`) or that was stopped by the agent's
    SIGTERM is a consequence, not the cause; among the rest the earliest (then the lowest
    rank) wins. Failure timestamps are whole seconds, so the kind of failure decides first.
    """
    from medxfer.training.distributed import is_peer_failure

    failures = getattr(exc, "failures", None) or {}
    if not failures:
        return exc.get_first_failure()

    def consequence(failure: Any) -> int:
        if is_peer_failure(RuntimeError(_message(failure))):
            return 2
        return 1 if _stopped_by_agent(failure) else 0

    rank = min(failures, key=lambda r: (consequence(failures[r]),
                                        getattr(failures[r], "timestamp", 0), r))
    return rank, failures[rank]


def describe_failure(exc: Any) -> tuple[str, int]:
    """One line and an exit code for torchrun's ``ChildFailedError``."""
    rank, failure = first_failure(exc)
    message = _message(failure)
    if failure.exitcode < 0:
        what = f"was killed by {failure.signal_name()}"
        code = 1
    else:
        what = f"failed with exit code {failure.exitcode}"
        code = failure.exitcode or 1
    detail = str(message or "").strip().splitlines()
    useful = detail and not detail[0].startswith(("To enable traceback", "Signal "))
    return (f"rank {rank} (local rank {failure.local_rank}) {what}"
            + (": " + " ".join(line.strip() for line in detail) if useful else "")
            + "; the other ranks were stopped"), code


def launch_run(nproc: int, run_args: list[str]) -> None:
    """Run ``medxfer run run_args`` in ``nproc`` worker processes and wait for them.

    Raises:
        LaunchError: when a worker fails (which rank, its exit code or signal, its error).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        with loopback_rendezvous() as port, _environment(_LOOPBACK_ENV):
            run(get_args_parser().parse_args(torchrun_args(nproc, run_args, port)))
    except ChildFailedError as exc:
        message, code = describe_failure(exc)
        raise LaunchError(message, code) from None
    except SignalException as exc:  # the launcher itself was interrupted or terminated
        raise LaunchError(f"interrupted by {exc.sigval.name}; the workers were stopped",
                          128 + int(exc.sigval)) from None
    finally:
        sys.stdout.flush()
