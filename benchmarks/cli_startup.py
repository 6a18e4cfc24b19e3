"""Start-up time and memory of the ``medxfer`` CLI's quick commands.

Each command runs in a fresh Python subprocess (the interpreter this script runs under,
from the current directory): ``python -c pass`` as the baseline, then ``python -m medxfer
--help``, ``--version`` and ``plugins``. Each is run ``--repeats`` times; the median wall
time and the median peak resident memory of the child (``ru_maxrss`` of a ``wait4``) are
printed with their ratios to the baseline, and whether the command imported torch or MONAI.

Usage::

    python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "medxfer --help": ["-m", "medxfer", "--help"],
    "medxfer --version": ["-m", "medxfer", "--version"],
    "medxfer plugins": ["-m", "medxfer", "plugins"],
}

# Runs the command as ``python -m medxfer`` would, then reports which heavy modules it loaded.
_PROBE = """
import runpy, sys
sys.argv = ["medxfer"] + sys.argv[1:]
try:
    runpy.run_module("medxfer", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
finally:
    sys.stderr.write("\\nheavy:" + ",".join(m for m in ("torch", "monai") if m in sys.modules))
"""


def run_once(args: list[str]) -> tuple[float, int]:
    """(wall seconds, peak resident memory in bytes) of ``python ARGS``, output discarded."""
    tic = time.perf_counter()
    process = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=_environment())
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - tic
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"python {' '.join(args)} exited with {process.returncode}")
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return seconds, usage.ru_maxrss * scale


def heavy_modules(args: list[str]) -> str:
    """Which of torch and MONAI the medxfer command ``args`` imports ("-" for none)."""
    if args[:2] != ["-m", "medxfer"]:
        return "-"
    result = subprocess.run([sys.executable, "-c", _PROBE, *args[2:]], capture_output=True,
                            text=True, env=_environment(), check=False)
    found = result.stderr.rpartition("heavy:")[2].strip()
    return found or "-"


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def main(argv: list[str] | None = None) -> int:
    """Time each command and print one line per command; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per command (median)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit("--repeats must be at least 1")
    print(f"{sys.executable} ({args.repeats} runs each, median)")
    print(f"{'command':<20} {'wall':>8} {'ratio':>7} {'peak RSS':>10} {'ratio':>7}  imports")
    base_time = base_rss = None
    for label, command in COMMANDS.items():
        runs = [run_once(command) for _ in range(args.repeats)]
        seconds = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        if base_time is None:
            base_time, base_rss = seconds, rss
        print(f"{label:<20} {seconds:7.3f}s {seconds / base_time:6.1f}x "
              f"{rss / 2**20:8.0f}MB {rss / base_rss:6.1f}x  {heavy_modules(command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
