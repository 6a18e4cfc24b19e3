"""Distributed data-parallel training under ``torchrun``: process group, collectives, DDP.

A run is distributed when ``torchrun`` (or ``medxfer run --nproc N``, which starts it) set
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. :func:`session` then joins the process group
(NCCL with one GPU per process, ``cuda:LOCAL_RANK``; gloo on CPU) and leaves it at the end.
Everything here is a no-op outside a session, so the single-process path is unchanged.

* Data: :mod:`medxfer.training.shards` splits training epochs and evaluation splits between
  the ranks; evaluation outputs are gathered back in dataset order on every rank, so each
  metric sees the whole split exactly once and every rank computes the same numbers.
* Gradients: the trainer's step function runs as the forward of a :class:`StepModule`
  (network plus the plugins' extra parameters) wrapped in
  :class:`~torch.nn.parallel.DistributedDataParallel` by :class:`DistributedStep`, which
  rebuilds the wrapper whenever the set of trainable parameters changes; ``train.ddp``
  (:class:`medxfer.config.DDPConfig`) sets its bucket size, gradient views and static graph.
* Outputs: only rank 0 (:func:`is_main`) writes; checkpoints and the selected model reach
  the other ranks by broadcast (:func:`from_rank_zero`, :func:`broadcast_state`), not
  through the file system.
"""

from __future__ import annotations

import gc
import ipaddress
import os
import socket
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from medxfer.config import DDPConfig
from medxfer.errors import ConfigError, notify
from medxfer.training.amp import resolve_device

#: Seconds a collective waits for a missing peer before failing (``MEDXFER_DIST_TIMEOUT``).
DEFAULT_TIMEOUT_S = 900.0
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


# -- process group ------------------------------------------------------------------------

def launched_by_torchrun() -> bool:
    """Whether this process is a ``torchrun`` worker (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``)."""
    return all(os.environ.get(name, "").strip() for name in _ENV)


def is_active() -> bool:
    """Whether a process group is initialised (the run is distributed)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's global rank (0 outside a distributed run)."""
    return torch.distributed.get_rank() if is_active() else 0


def world_size() -> int:
    """Number of processes (1 outside a distributed run)."""
    return torch.distributed.get_world_size() if is_active() else 1


def is_main() -> bool:
    """Whether this process writes the run's outputs (rank 0, or any single process)."""
    return rank() == 0


def rank_seed(seed: int) -> int:
    """This rank's own seed for augmentation and dropout: rank 0 keeps ``seed``, so a
    one-process run and rank 0 draw alike, and every other rank draws differently."""
    return (seed + 1_000_003 * rank()) % 2**32


def timeout() -> timedelta:
    """The collective timeout: ``MEDXFER_DIST_TIMEOUT`` seconds, else 15 minutes."""
    text = os.environ.get("MEDXFER_DIST_TIMEOUT", "")
    try:
        seconds = float(text) if text.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"MEDXFER_DIST_TIMEOUT={text!r} is not a number of seconds") from None
    return timedelta(seconds=seconds)


def worker_device(name: str) -> torch.device:
    """The device of this worker for ``train.device`` ``name``: ``cuda:LOCAL_RANK`` when the
    run uses CUDA (one GPU per process), else what :func:`resolve_device` gives."""
    device = resolve_device(name)
    if device.type == "cuda" and launched_by_torchrun():
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} has no GPU ({torch.cuda.device_count()} "
                              "visible); start at most one process per GPU (--nproc)")
        return torch.device("cuda", local)
    return device


@contextmanager
def session(device_name: str) -> Iterator[torch.device | None]:
    """Join the torchrun process group for the body; a no-op (yields ``None``) otherwise.

    Args:
        device_name: ``train.device`` of the run: NCCL on ``cuda:LOCAL_RANK`` when it
            resolves to CUDA, gloo on CPU.

    Yields:
        This worker's device, or ``None`` when the process was not started by torchrun.
    """
    if not launched_by_torchrun() or is_active():
        yield None
        return
    device = worker_device(device_name)
    backend = "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    store = _loopback_store()
    torch.distributed.init_process_group(
        backend=backend, timeout=timeout(), device_id=device if backend == "nccl" else None,
        **({} if store is None else {"store": store, "rank": int(os.environ["RANK"]),
                                     "world_size": int(os.environ["WORLD_SIZE"])}))
    try:
        yield device
    finally:
        # The run's DDP wrapper sits in reference cycles (trainer, hooks, context); left to
        # the interpreter's shutdown, its reducer and the process group it holds are torn
        # down while the runtime is half gone, and the process can abort ("terminate called
        # without an active exception", seen on CPU/gloo). Free them while all is alive.
        gc.collect()
        torch.distributed.destroy_process_group()


def _loopback_store() -> torch.distributed.Store | None:
    """The process group's store, listening on ``MASTER_ADDR`` only, when that is a loopback
    address and this job's rank 0 hosts it (``medxfer run --nproc``; torchrun's agent
    hosts it by default). ``None``: torch's own, which listens on every interface.
    """
    host = os.environ.get("MASTER_ADDR", "")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" or not _is_loopback(host):
        return None
    port, world = int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"])
    if int(os.environ["RANK"]) != 0:
        return torch.distributed.TCPStore(host, port, world, is_master=False, timeout=timeout())
    listener = socket.create_server((host, port))
    return torch.distributed.TCPStore(host, port, world, is_master=True, timeout=timeout(),
                                      master_listen_fd=listener.detach())


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def barrier() -> None:
    """Wait for every rank (no-op outside a distributed run)."""
    if is_active():
        torch.distributed.barrier()


def from_rank_zero(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; ``obj`` unchanged when not distributed)."""
    if not is_active():
        return obj
    box = [obj if is_main() else None]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, indexed by rank (``[obj]`` when not distributed)."""
    if not is_active():
        return [obj]
    parts: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(parts, obj)
    return parts


#: Error texts of a collective whose peer died: a consequence, not the cause, of a failure.
_PEER_FAILURE = ("connection closed by peer", "connection reset by peer", "gloo/transport",
                 "remote worker crash", "communicator was aborted",
                 "collective operation timeout")


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says only that another rank stopped answering (so that rank's own
    failure is the one to report)."""
    if isinstance(exc, getattr(torch.distributed, "DistError", ())):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in text for marker in _PEER_FAILURE)


def record_error(exc: BaseException) -> None:
    """Write ``exc`` to torchrun's error file (``TORCHELASTIC_ERROR_FILE``), so that the
    launcher reports which rank failed and why. A no-op outside torchrun."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    ErrorHandler().record_exception(exc)


# -- model state --------------------------------------------------------------------------

def broadcast_state(module: nn.Module, *, buffers_only: bool = False) -> None:
    """Copy rank 0's parameters and buffers (only buffers, such as batch-norm statistics,
    with ``buffers_only``) into ``module`` on every rank, in place."""
    if not is_active():
        return
    tensors = list(module.buffers()) if buffers_only else list(module.state_dict().values())
    with torch.no_grad():
        for tensor in tensors:
            torch.distributed.broadcast(tensor.data, src=0)


def sync_batchnorm(model: nn.Module, device: torch.device, enabled: bool) -> nn.Module:
    """``model`` with its batch norms synchronised over the ranks when ``enabled`` and the
    run is distributed (``train.sync_batchnorm``); ``model`` unchanged otherwise.

    Raises:
        ConfigError: when enabled in a distributed run that does not use CUDA.
    """
    if not enabled or not is_active():
        return model
    if device.type != "cuda":
        raise ConfigError("train.sync_batchnorm: SyncBatchNorm needs CUDA (NCCL); this run "
                          f"trains on {device.type}, so set train.sync_batchnorm=false")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def average_scalars(values: dict[str, torch.Tensor], device: torch.device) -> dict[str, Any]:
    """The mean over ranks of each scalar (every rank must pass the same keys)."""
    if not is_active() or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].detach().float().reshape(()) for k in keys]).to(device)
    torch.distributed.all_reduce(stacked)
    stacked /= world_size()
    return dict(zip(keys, stacked.cpu()))


# -- data-parallel training step ----------------------------------------------------------

class StepModule(nn.Module):
    """A module whose forward is one training step's forward (returning the loss).

    DDP synchronises gradients of the parameters of the module it wraps and hooks into
    that module's ``forward``. The trainer calls ``forward_features`` and plugin hooks,
    so it is this module, not the network, that DDP wraps: its parameters are the
    network's plus ``extra`` (parameters plugins added to the optimizer, such as a domain
    discriminator), and its forward runs the trainer's step function.
    """

    def __init__(self, model: nn.Module, step_fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.extra = nn.ParameterList()
        self._step_fn = step_fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the step function."""
        return self._step_fn(*args, **kwargs)


def _trainable_ids(params: Sequence[nn.Parameter]) -> tuple[int, ...]:
    return tuple(id(p) for p in params if p.requires_grad)


class DistributedStep:
    """Runs the trainer's step function through DDP.

    The wrapper is built on the first call and rebuilt whenever the trainable parameters
    change (a strategy unfreezing a layer group, a plugin adding parameters to the
    optimizer): DDP only synchronises the parameters that required gradients when it was
    built. Frozen parameters stay frozen; DDP never changes ``requires_grad``. Parameters
    a step leaves unused are allowed (``find_unused_parameters=True``, or a static graph;
    torch warns once per rank when a step used them all).

    ``options.static_graph`` holds for the first wrapper only: a static graph promises the
    trainable parameters never change, so a rebuild drops it (and says so once) rather
    than train on a promise broken.
    :func:`medxfer.workflows.preflight.check_config` refuses it up front for a strategy
    that declares such changes (``changes_trainable_parameters``).

    Args:
        model: The network.
        step_fn: The step function (called with the arguments given to this object).
        optimizer: Returns the live optimizer; its parameters outside ``model`` are synced.
        device: This rank's device.
        options: ``train.ddp`` (default: its defaults).
    """

    def __init__(self, model: nn.Module, step_fn: Callable[..., Any],
                 optimizer: Callable[[], torch.optim.Optimizer], device: torch.device,
                 options: DDPConfig | None = None) -> None:
        self.step = StepModule(model, step_fn)
        self.optimizer = optimizer
        self.device = device
        self.options = options or DDPConfig()
        self.static_graph = self.options.static_graph
        self._ddp: nn.Module | None = None
        self._signature: tuple[int, ...] | None = None
        self.builds = 0

    def _extra_parameters(self) -> list[nn.Parameter]:
        known = {id(p) for p in self.step.model.parameters()}
        extra: list[nn.Parameter] = []
        for group in self.optimizer().param_groups:
            for p in group["params"]:
                if id(p) not in known:
                    known.add(id(p))
                    extra.append(p)
        return extra

    def _refresh(self) -> None:
        extra = self._extra_parameters()
        signature = _trainable_ids(list(self.step.model.parameters()) + extra)
        if self._ddp is not None and signature == self._signature:
            return
        if self._ddp is not None and self.static_graph:
            self.static_graph = False
            if is_main():
                notify("train.ddp.static_graph is off from now on: the trainable parameters "
                       "changed during training (a strategy unfroze layers or a plugin added "
                       "parameters to the optimizer), which a static graph does not allow; "
                       "set train.ddp.static_graph: false for such runs")
        self._ddp = None
        gc.collect()  # drop the old reducer and its gradient hooks before building anew
        self.step.extra = nn.ParameterList(extra)
        from torch.nn.parallel import DistributedDataParallel

        self._ddp = DistributedDataParallel(
            self.step, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            # a static graph finds the unused parameters itself, on its first step
            find_unused_parameters=not self.static_graph,
            bucket_cap_mb=self.options.bucket_cap_mb,
            gradient_as_bucket_view=self.options.gradient_as_bucket_view,
            static_graph=self.static_graph)
        self._signature = signature
        self.builds += 1

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run one step's forward through DDP (backward then averages the gradients)."""
        self._refresh()
        assert self._ddp is not None
        return self._ddp(*args, **kwargs)
