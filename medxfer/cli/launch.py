"""``medxfer run --nproc N``: start the run under torchrun on this machine, or as one node
of several (``--nnodes M --node-rank R --rdzv-endpoint HOST:PORT``).

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

Several nodes use torchrun's static rendezvous: node rank 0 hosts the store on
``HOST:PORT``, which the other nodes must reach, so it listens on every interface of that
node (``docs/distributed.md`` says what that exposes); global rank 0, which writes the run
folder, is on node rank 0.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from medxfer.errors import ConfigError, MedxferError

LOOPBACK = "127.0.0.1"


class LaunchError(MedxferError):
    """A worker of a ``--nproc`` run failed; the message names its rank and error."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Nodes:
    """The machines of a multi-node run: how many, which one this is, and where node rank
    0 hosts the rendezvous (``None``: one node, on loopback)."""

    count: int = 1
    rank: int = 0
    endpoint: tuple[str, int] | None = None

    @property
    def single(self) -> bool:
        """Whether the run is on this machine alone."""
        return self.count == 1

    @property
    def loopback(self) -> bool:
        """Whether every connection of the run stays on this machine's loopback interface."""
        return self.endpoint is None or _is_loopback_host(self.endpoint[0])


def parse_nodes(nnodes: int, node_rank: int, endpoint: str | None) -> Nodes:
    """Check ``--nnodes``, ``--node-rank`` and ``--rdzv-endpoint HOST:PORT`` together.

    Raises:
        ConfigError: naming the option and what to give instead.
    """
    if nnodes < 1:
        raise ConfigError(f"--nnodes {nnodes}: give the number of machines (1 or more)")
    if nnodes == 1:
        if node_rank != 0 or endpoint is not None:
            raise ConfigError("--node-rank and --rdzv-endpoint are for several machines: "
                              "give --nnodes M (M > 1) too, or leave them out")
        return Nodes()
    if endpoint is None:
        raise ConfigError(f"--nnodes {nnodes} needs --rdzv-endpoint HOST:PORT: the address "
                          "and a free port of node rank 0, the same on every node")
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"--node-rank {node_rank}: with --nnodes {nnodes} give 0 to "
                          f"{nnodes - 1}, a different one on each machine (0 on the machine "
                          "that HOST names)")
    host, sep, port = endpoint.rpartition(":")
    host = host.strip("[]")  # [::1]:29500
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--rdzv-endpoint {endpoint!r}: give HOST:PORT, e.g. "
                          "node0.cluster:29500 (the machine of node rank 0 and a free port)")
    return Nodes(nnodes, node_rank, (host, int(port)))


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def torchrun_nodes_args(nproc: int, run_args: list[str], nodes: Nodes) -> list[str]:
    """The ``torchrun`` command line for one node of a multi-node run: the static
    rendezvous on ``nodes.endpoint``, whose node rank 0 is the run's global rank 0."""
    assert nodes.endpoint is not None
    host, port = nodes.endpoint
    return [f"--nnodes={nodes.count}", f"--node-rank={nodes.rank}",
            f"--nproc_per_node={nproc}", "--rdzv-backend=static",
            f"--rdzv-endpoint={host}:{port}", "--max_restarts=0", "--monitor_interval=0.5",
            "-m", "medxfer", "run", *run_args]


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


def launch_run(nproc: int, run_args: list[str], nodes: Nodes | None = None) -> None:
    """Run ``medxfer run run_args`` in ``nproc`` worker processes and wait for them (on
    this machine, or as one node of ``nodes``).

    Raises:
        LaunchError: when a worker fails (which rank, its exit code or signal, its error).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    nodes = nodes or Nodes()
    try:
        if nodes.single:
            with loopback_rendezvous() as port, _environment(_LOOPBACK_ENV):
                run(get_args_parser().parse_args(torchrun_args(nproc, run_args, port)))
        else:
            # nodes on one machine (a test, or a node per socket) keep gloo on loopback
            env = {k: v for k, v in _LOOPBACK_ENV.items() if "IFNAME" in k} \
                if nodes.loopback else {}
            with _environment(env):
                run(get_args_parser().parse_args(torchrun_nodes_args(nproc, run_args, nodes)))
    except ChildFailedError as exc:
        message, code = describe_failure(exc)
        raise LaunchError(message, code) from None
    except SignalException as exc:  # the launcher itself was interrupted or terminated
        raise LaunchError(f"interrupted by {exc.sigval.name}; the workers were stopped",
                          128 + int(exc.sigval)) from None
    finally:
        sys.stdout.flush()
