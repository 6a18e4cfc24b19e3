"""A run SIGKILLed anywhere finishes, by the same command or ``--resume``, with the test
metrics of a run that was never killed.

A small run on the embedded sample data is timed uninterrupted, two at a time as the
killed runs will be (so the timing has their contention for the CPUs): how long after its
first write (``config.yaml``) it makes its last (``report.html``). It is then started
again in 20 folders of its own and killed at 20 seeded random moments spread over that
span, measured from each run's first write (Python's start-up before it, which writes
nothing, takes most of the wall time and varies). After each kill the folder is finished
as a user would: ``--resume`` when it holds a checkpoint, else the same command (a folder
killed before its first checkpoint is started again); a run killed after its last write is
left as it is. The killed runs are subprocesses, two at a time; the finishing commands run
in this process (the same CLI, without paying Python's start-up twenty more times).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from medxfer.cli import main
from medxfer.training.checkpoints import has_checkpoint

pytestmark = pytest.mark.slow

RUN = ["--set", "model.backbone.name=basic_cnn", "--set", "train.epochs=4",
       "--set", "train.batch_size=8", "--set", "eval.bootstrap=0", "--set", "train.threads=1"]
KILL_POINTS = 20
SEED = 27


def start(output: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, "-m", "medxfer", "run", "--output", str(output),
                             *RUN], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def metrics_of(output: Path) -> dict:
    return json.loads((output / "metrics.json").read_text(encoding="utf-8"))["test"]


def finish(output: Path) -> str:
    """Finish a killed run as a user would; returns what it took."""
    if (output / "metrics.json").is_file():
        return "finished already"
    if output.is_dir() and has_checkpoint(output):
        assert main(["run", "--output", str(output), "--resume"]) == 0
        return "--resume"
    assert main(["run", "--output", str(output), *RUN]) == 0
    return "the same command"


def first_write(proc: subprocess.Popen, output: Path) -> float:
    """Wait for the run's first write (its ``config.yaml``); the moment, or when it ended."""
    while not (output / "config.yaml").exists() and proc.poll() is None:
        time.sleep(0.01)
    return time.monotonic()


def kill_at(output: Path, moment: float) -> None:
    """Start the run in ``output`` and SIGKILL it ``moment`` seconds after its first write
    (unless it has ended by then)."""
    proc = start(output)
    begun = first_write(proc, output)
    try:
        proc.wait(timeout=max(0.0, begun + moment - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def timed_run(output: Path) -> float:
    """Run uninterrupted in ``output``; the seconds from its first write to its last."""
    proc = start(output)
    begun = first_write(proc, output)
    while not (output / "report.html").exists() and proc.poll() is None:
        time.sleep(0.01)
    span = time.monotonic() - begun
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return span


@pytest.mark.timeout(1800)
def test_a_run_killed_at_any_point_finishes_with_the_same_test_metrics(tmp_path, capsys):
    reference, twin = tmp_path / "uninterrupted", tmp_path / "uninterrupted-twin"
    with ThreadPoolExecutor(max_workers=2) as pool:
        span = max(pool.map(timed_run, [reference, twin]))
    expected = metrics_of(reference)
    assert metrics_of(twin) == expected

    rng = random.Random(SEED)
    moments = sorted(rng.uniform(0, span + 0.5) for _ in range(KILL_POINTS))
    outputs = [tmp_path / f"killed-{i:02d}" for i in range(KILL_POINTS)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # two runs at a time: start-up is slow
        list(pool.map(kill_at, outputs, moments))
    how = []
    for i, (output, moment) in enumerate(zip(outputs, moments)):
        how.append(finish(output))
        capsys.readouterr()  # the finishing runs' output
        assert metrics_of(output) == pytest.approx(expected, rel=1e-6), (i, moment, how[-1])
        assert (output / "report.html").is_file(), (i, moment, how[-1])
        assert not [p for p in output.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    # metrics.json, which marks a run finished, is its last write: a run killed just before
    # it (its report written) resumes, where one killed after it would have no report
    last = max((p for p in reference.rglob("*") if p.is_file() and "tensorboard" not in p.parts),
               key=lambda p: p.stat().st_mtime_ns)
    assert last.name == "metrics.json", last
    unmarked = tmp_path / "unmarked"
    shutil.copytree(reference, unmarked)
    (unmarked / "metrics.json").unlink()
    assert finish(unmarked) == "--resume"
    assert metrics_of(unmarked) == pytest.approx(expected, rel=1e-6)
    with capsys.disabled():
        print(f"\nwrites over {span:.1f} s; killed {', '.join(f'{m:.2f}' for m in moments)} s "
              f"after the first; finished by {how}")
    assert how.count("--resume") >= 3 and how.count("the same command") >= 1
