"""Checkpoints: written atomically, loaded safely (safetensors or ``weights_only=True``).

A run folder holds:

* ``checkpoints/last.pt``: the full training state after the last finished epoch (model,
  optimizer, epoch, history, best score, RNG states), for ``--resume``;
* ``model.safetensors`` with ``model.json`` beside it: the selected (best) model weights
  and what produced them.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from medxfer.errors import CheckpointError
from medxfer.io import (
    atomic_open,
    default_mode,
    json_text,
    new_temporary,
    quiet_weights_only_load,
    read_json_object,
    reported_as_output_error,
    why_unloadable,
)
from medxfer.rng import pack_numpy_state, unpack_numpy_state

LAST_STATE = Path("checkpoints") / "last.pt"
BEST_WEIGHTS = "model.safetensors"
BEST_SIDECAR = "model.json"
# what to do about a last.pt that cannot be loaded (a run folder with neither a checkpoint
# nor metrics.json is started again by the same command)
_RESTART = "delete it and run the same command again to restart the run from scratch"


def has_checkpoint(folder: str | os.PathLike[str]) -> bool:
    """Whether a run folder holds a training state to resume from: its own
    ``checkpoints/last.pt`` or an ensemble member's below it."""
    return any(Path(folder).rglob(LAST_STATE.name))


def save_training_state(run_dir: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write the resumable training state to ``run_dir/checkpoints/last.pt`` atomically
    (a failed write leaves the previous one as it was).

    Raises:
        OutputError: when the disk is full or read-only, or permission is denied.
    """
    path = Path(run_dir) / LAST_STATE
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)
    return path


def load_training_state(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Load ``checkpoints/last.pt`` with ``weights_only=True``.

    Raises:
        CheckpointError: when the file is missing, empty, truncated, holds objects a
            weights-only load refuses or is not a medxfer state; the message says which,
            without PyTorch's own text (which suggests an unsafe load).
    """
    path = Path(run_dir) / LAST_STATE
    if not path.is_file():
        raise CheckpointError(
            f"cannot resume: {str(path)!r} does not exist (the run finished no epoch yet); "
            "start it again without --resume in a new --output folder")
    try:
        with quiet_weights_only_load():
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the weights-only unpickler raises anything
        # (IndexError, TypeError, ...) on damaged bytes, and every error means the same here.
        # PyTorch's own text is left out: for a refused object it advises loading the file
        # with weights_only=False, which would run whatever code the file holds
        raise CheckpointError(f"checkpoint {str(path)!r} {_load_problem(path, exc)}") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is not a medxfer training state; {_RESTART}")
    return state


def _load_problem(path: Path, exc: BaseException) -> str:
    """What is wrong with a checkpoint ``torch.load`` failed on, in a few words, and what
    to do."""
    problem = why_unloadable(path, exc, what="PyTorch checkpoint",
                             refused="it was not written by medxfer")
    if problem.startswith("cannot be read"):  # the file itself (permissions, I/O)
        return f"{problem}; make it readable, or {_RESTART}"
    return f"{problem}; {_RESTART}"


def save_model(run_dir: str | os.PathLike[str], model: torch.nn.Module,
               sidecar: dict[str, Any]) -> Path:
    """Write model weights as safetensors with a JSON sidecar, both atomically.

    Tensors a network registers under two names (shared blocks) are written once per
    name: safetensors refuses shared storage, so such duplicates are copied.

    Raises:
        OutputError: when the disk is full or read-only, or permission is denied.
    """
    run_dir = Path(run_dir)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, value in model.state_dict().items():
        tensor = value.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
        if storage in seen:
            tensor = tensor.clone()
        seen.add(storage)
        tensors[key] = tensor
    path = run_dir / BEST_WEIGHTS
    with reported_as_output_error(path):
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = new_temporary(path)
        try:
            save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "medxfer"})
            tmp.chmod(default_mode())  # in case safetensors made a new file (0600)
            # both files are whole before either replaces its old self: a write that
            # fails (a full disk) leaves the old pair, never new weights with an old sidecar
            with atomic_open(run_dir / BEST_SIDECAR, "w") as handle:
                handle.write(json_text(sidecar))
                handle.flush()
                os.fsync(handle.fileno())
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return path


def load_model_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a safetensors weights file.

    Raises:
        CheckpointError: when the file is missing or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model weights {str(path)!r} do not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"model weights {str(path)!r} are corrupt ({exc})") from None


def read_sidecar(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON sidecar of a run's saved model ({} when absent).

    Raises:
        CheckpointError: when the file is unreadable or not a JSON object.
    """
    path = Path(run_dir) / BEST_SIDECAR
    if not path.is_file():
        return {}
    return read_json_object(path, what_to_do="it describes the run's saved model, so the run "
                            "cannot be used without it. Restore it from a copy or train the "
                            "run again")


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (CPU and, when used, CUDA) RNG states in a form ``weights_only``
    loading accepts."""
    return {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "python_gauss": random.getstate()[2],
        "numpy": pack_numpy_state(np.random.get_state()),
        "torch": torch.get_rng_state(),
        # dropout on a GPU draws from the CUDA generators (None when CUDA is unused)
        "cuda": (torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                 and torch.cuda.is_initialized() else None),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    numpy_state = state.get("numpy") or {"keys": state["numpy_keys"],  # older checkpoints
                                          "pos": state["numpy_pos"]}
    np.random.set_state(unpack_numpy_state(numpy_state))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
