"""Memory sizes as people write them (``8GB``, ``512MiB``, a share like ``0.5``), read
without importing anything heavy (the config is checked before torch is imported), and
the memory this process can still use."""

from __future__ import annotations

import os
import re
from pathlib import Path

from medxfer.errors import ConfigError

#: ``data.cache_memory`` when it is not set: this share of the memory available at start.
DEFAULT_MEMORY_SHARE = 0.5

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2,
          "g": 1000 ** 3, "gb": 1000 ** 3, "t": 1000 ** 4, "tb": 1000 ** 4,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_memory(value: str | float, key: str = "data.cache_memory") -> int | float:
    """Bytes from ``"8GB"``, ``"512MiB"``, ``"2e9"``, or a share of available memory
    (a number in (0, 1], returned as a float).

    Raises:
        ConfigError: naming ``key`` for anything else.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if 0 < value <= 1:
            return float(value)
        if value > 1:
            return int(value)
    text = str(value).strip().lower().replace(" ", "")
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)([a-z]*)", text)
    if match and match.group(2) in _UNITS:
        number = float(match.group(1))
        if match.group(2) == "" and 0 < number <= 1:
            return number
        if number > 0:
            return int(number * _UNITS[match.group(2)])
    raise ConfigError(f"{key}: {value!r} is not a memory size; give bytes with a unit "
                      "(e.g. 8GB, 512MiB) or a share of the available memory (e.g. 0.5)")


def format_bytes(n: float) -> str:
    """``812 MB``, ``1.4 GB`` (decimal units, as disks and ``free -h --si`` count)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n < 10 * size else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"


def available_memory() -> int:
    """Bytes of memory this process can still use: ``MemAvailable`` of ``/proc/meminfo``,
    lowered to the room left under a cgroup (container, SLURM job) limit."""
    available = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None:
        available = min(available, limit)
    return max(int(available), 0)


def _meminfo_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # no way to ask: assume a small machine


#: (limit, usage) files of a memory cgroup: v2, then v1.
CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                 "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def _cgroup_room() -> int | None:
    """Limit minus usage of this process's memory cgroup (v2, or v1), if it has a limit."""
    for limit_file, usage_file in CGROUP_FILES:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit == "max" or not limit.isdigit() or int(limit) >= 1 << 60:
            return None
        return int(limit) - usage
    return None
