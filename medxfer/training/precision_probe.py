"""``train.amp: auto`` on CUDA: the fastest of fp32 (TF32), bf16 and fp16 for this GPU and
network, from a few timed training steps, remembered between runs.

On Ampere and later GPUs PyTorch's fp32 already runs convolutions on the tensor cores
(TF32), and a small 3D step is mostly kernel launches that autocast makes more of, so AMP
can be slower than fp32 (0.67x on an H200 for the Hippocampus 3D config); elsewhere fp16 or
bf16 wins. :func:`choose_precision` times each (through the ``measure`` callable it is
given, so that the choice is testable without a GPU) and keeps the result in a small JSON
file (:func:`probe_cache_path`) keyed by the GPU, the torch and CUDA versions and the
network's identity and input, so that later runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from medxfer.errors import MedxferError, notify
from medxfer.io import atomic_write_text
from medxfer.training.amp import Precision

#: The precisions timed, in the order they are tried (and preferred on a tie).
VARIANTS = ("fp32", "bf16", "fp16")
#: fp16 needs loss scaling (a GradScaler), so it must beat fp32 and bf16 by this factor.
FP16_MARGIN = 1.05
#: Environment variable naming the cache file.
CACHE_ENV = "MEDXFER_PRECISION_CACHE"
_CACHE_VERSION = 1


@dataclass
class PrecisionChoice:
    """What ``train.amp: auto`` chose, and why.

    Attributes:
        variant: ``fp32``, ``bf16`` or ``fp16``.
        samples_per_s: Training samples per second of each variant timed.
        skipped: Variants not timed, with the reason (unsupported, or the error it raised).
        device_name: The GPU the probe ran on.
        cached: Whether the timings came from the cache (no probe in this run).
    """

    variant: str
    samples_per_s: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    device_name: str = ""
    cached: bool = False

    def precision(self, device: torch.device) -> Precision:
        """The chosen :class:`Precision` on ``device``."""
        return precision_of(self.variant, device)

    def describe(self) -> str:
        """The run log's line: ``precision: bf16 (probe on NVIDIA H200: fp32 812/s, bf16
        1190/s, fp16 1105/s; cached)``."""
        timed = ", ".join(f"{v} {self.samples_per_s[v]:.0f}/s" for v in VARIANTS
                          if v in self.samples_per_s)
        parts = [f"probe on {self.device_name}: {timed or 'nothing timed'}"]
        parts += [f"{v} skipped: {why}" for v, why in self.skipped.items()]
        fastest = max(self.samples_per_s, key=self.samples_per_s.__getitem__, default=None)
        if fastest == "fp16" and self.variant != "fp16":
            parts.append(f"fp16 not {FP16_MARGIN - 1:.0%} faster, so no loss scaling")
        if self.cached:
            parts.append("cached")
        return f"precision: {self.variant} ({'; '.join(parts)})"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready record for the run folder (``metrics.json``)."""
        return {"chosen": self.variant, "samples_per_s": dict(self.samples_per_s),
                "skipped": dict(self.skipped), "device": self.device_name,
                "cached": self.cached, "reason": self.describe()}


def precision_of(variant: str, device: torch.device) -> Precision:
    """The :class:`Precision` of ``fp32``, ``bf16`` or ``fp16`` on ``device``."""
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    return Precision(dtypes[variant], device.type)


def probe_cache_path() -> Path:
    """``$MEDXFER_PRECISION_CACHE``, else ``$XDG_CACHE_HOME/medxfer/precision_probe.json``
    (``~/.cache`` when ``XDG_CACHE_HOME`` is unset)."""
    named = os.environ.get(CACHE_ENV, "").strip()
    if named:
        return Path(named).expanduser()
    root = os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache"
    return Path(root) / "medxfer" / "precision_probe.json"


def device_facts(device: torch.device) -> dict[str, Any]:
    """What about the machine decides the timings: the GPU's name, torch's and CUDA's
    versions."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return {"gpu": name, "torch": torch.__version__, "cuda": torch.version.cuda}


def candidate_variants(device: torch.device) -> tuple[list[str], dict[str, str]]:
    """The variants worth timing on ``device``, and those left out with the reason."""
    if device.type != "cuda":
        return ["fp32", "bf16"], {"fp16": "needs CUDA"}
    if torch.cuda.is_bf16_supported():
        return list(VARIANTS), {}
    return ["fp32", "fp16"], {"bf16": "not supported by this GPU"}


def choose_precision(device: torch.device, measure: Callable[[str], float], *,
                     network: dict[str, Any], cache_path: Path | None = None,
                     facts: dict[str, Any] | None = None) -> PrecisionChoice:
    """The fastest precision for training ``network`` on ``device``: the cached probe
    result when there is one for this machine and network, else ``measure`` each variant
    and cache the result.

    The fastest of fp32 and bf16 is chosen, unless fp16 is :data:`FP16_MARGIN` times faster
    than both. A variant whose ``measure`` raises is skipped (its error noted); when none
    could be timed the choice is fp32, and nothing is cached.

    Args:
        device: The training device.
        measure: Training samples per second of a variant (``fp32``, ``bf16``, ``fp16``).
        network: What about the run decides the timings (network, input shape, batch
            size, channels-last, compile), part of the cache key.
        cache_path: The cache file (default :func:`probe_cache_path`).
        facts: The machine's part of the key (default :func:`device_facts`).

    Returns:
        The choice, with the timings it was made from.
    """
    path = probe_cache_path() if cache_path is None else cache_path
    facts = device_facts(device) if facts is None else facts
    key = probe_key(facts, network)
    entries = read_probe_cache(path)
    cached = _choice_from_entry(entries.get(key))
    if cached is not None:
        return cached
    variants, skipped = candidate_variants(device)
    speeds: dict[str, float] = {}
    for variant in variants:
        try:
            speeds[variant] = float(measure(variant))
        except Exception as exc:  # noqa: BLE001 - one variant failing leaves the others
            skipped[variant] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    choice = PrecisionChoice(fastest_variant(speeds), speeds, skipped, str(facts["gpu"]))
    if speeds:
        entries[key] = {**choice.as_dict(), "facts": facts, "network": network,
                        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write_probe_cache(path, entries)
    else:
        notify(f"train.amp: auto could not time any precision on {facts['gpu']} "
               f"({'; '.join(f'{v}: {why}' for v, why in skipped.items())}); training in "
               "fp32 (set train.amp to choose one)")
    return choice


def fastest_variant(samples_per_s: dict[str, float]) -> str:
    """fp32 or bf16, whichever is faster (fp32 on a tie), unless fp16 beats both by
    :data:`FP16_MARGIN`; fp32 when nothing was timed."""
    plain = [v for v in ("fp32", "bf16") if v in samples_per_s]
    best = max(plain, key=samples_per_s.__getitem__, default=None)
    fp16 = samples_per_s.get("fp16")
    if fp16 is not None and (best is None or fp16 > FP16_MARGIN * samples_per_s[best]):
        return "fp16"
    return best or "fp32"


def probe_key(facts: dict[str, Any], network: dict[str, Any]) -> str:
    """The cache key of a machine and a network (a digest of both, sorted)."""
    text = json.dumps({"machine": facts, "network": network}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_probe_cache(path: Path) -> dict[str, Any]:
    """The cache's entries by key; ``{}`` when there is no cache, and (with one warning)
    when it cannot be read or is not a cache of this version (it is then rewritten)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        notify(f"precision probe cache {str(path)!r} could not be read ({exc}); it is "
               f"ignored and rewritten (set {CACHE_ENV} to use another file)")
        return {}
    try:
        data = json.loads(text)
        entries = data["entries"] if data.get("version") == _CACHE_VERSION else {}
        if not isinstance(entries, dict):
            raise TypeError("entries is not a mapping")
    except (ValueError, TypeError, KeyError, AttributeError):
        notify(f"precision probe cache {str(path)!r} is not valid JSON of medxfer's probe "
               "cache (damaged?); it is ignored and rewritten")
        return {}
    return entries


def _choice_from_entry(entry: Any) -> PrecisionChoice | None:
    """The cached choice of an entry, or None when the entry is missing or malformed."""
    try:
        speeds = {str(k): float(v) for k, v in entry["samples_per_s"].items()}
        variant = fastest_variant(speeds)
        skipped = {str(k): str(v) for k, v in (entry.get("skipped") or {}).items()}
        return PrecisionChoice(variant, speeds, skipped, str(entry["device"]), cached=True)
    except (TypeError, KeyError, ValueError, AttributeError):
        return None


def _write_probe_cache(path: Path, entries: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"version": _CACHE_VERSION, "entries": entries},
                                           indent=1, sort_keys=True) + "\n")
    except (OSError, MedxferError) as exc:
        notify(f"the precision probe's result could not be cached in {str(path)!r} ({exc}); "
               f"later runs probe again (set {CACHE_ENV} to a writable file)")
