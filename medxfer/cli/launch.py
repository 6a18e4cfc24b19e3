"""``medxfer run --nproc N``: start the run under torchrun on this machine.

The launcher runs ``torch.distributed.run`` in-process, as ``torchrun --standalone
--nproc_per_node N -m medxfer run ...`` would, and turns a failed worker into one line
naming the rank and its error (or the signal that killed it). torchrun's agent stops the
other workers as soon as one fails, so nothing is left waiting for a dead peer.
"""

from __future__ import annotations

import sys
from typing import Any

from medxfer.errors import MedxferError


class LaunchError(MedxferError):
    """A worker of a ``--nproc`` run failed; the message names its rank and error."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def torchrun_args(nproc: int, run_args: list[str]) -> list[str]:
    """The ``torchrun`` command line (without the program) for ``medxfer run run_args``."""
    return ["--standalone", f"--nproc_per_node={nproc}", "--max_restarts=0",
            "--monitor_interval=0.5", "-m", "medxfer", "run", *run_args]


def _message(failure: Any) -> str:
    message = failure.message
    if isinstance(message, dict):  # torchelastic's error-file record
        message = message.get("message", "")
    return str(message or "")


def first_failure(exc: Any) -> tuple[int, Any]:
    """The rank whose failure caused the others: the earliest one that is not just a lost
    connection to a failed peer (see :func:`medxfer.engine.distributed.is_peer_failure`)."""
    from medxfer.engine.distributed import is_peer_failure

    failures = getattr(exc, "failures", None) or {}
    causes = {rank: f for rank, f in failures.items()
              if not is_peer_failure(RuntimeError(_message(f)))}
    if not causes:
        return exc.get_first_failure()
    rank = min(causes, key=lambda r: (causes[r].timestamp, r))
    return rank, causes[rank]


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

    args = get_args_parser().parse_args(torchrun_args(nproc, run_args))
    try:
        run(args)
    except ChildFailedError as exc:
        message, code = describe_failure(exc)
        raise LaunchError(message, code) from None
    except SignalException as exc:  # the launcher itself was interrupted or terminated
        raise LaunchError(f"interrupted by {exc.sigval.name}; the workers were stopped",
                          128 + int(exc.sigval)) from None
    finally:
        sys.stdout.flush()
