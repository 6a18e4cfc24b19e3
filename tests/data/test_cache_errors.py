"""A data error found while the memory cache fills ends with one message naming the file
and exit 2: before, an exception escaped a filling thread of MONAI's CacheDataset, and the
process aborted after the message (``terminate called without an active exception``, exit
134, 11 of 14 tries)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from medxfer.config import PreprocessConfig
from medxfer.data.datasets import cached_dataset
from medxfer.data.preprocess import preprocess_transform
from medxfer.errors import DataError
from tests.data.datafiles import write_nifti

REPO = Path(__file__).resolve().parents[2]


def _volumes(root: Path, n: int = 12, size: int = 24, bad: int = 3) -> list[dict]:
    """``n`` volumes with masks; case ``bad``'s mask is two slices short."""
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        vol = rng.random((size, size, size)).astype(np.float32)
        mask = (vol > 0.7).astype(np.uint8)
        if not (root / f"m{i}.nii.gz").exists():  # written once for several processes
            write_nifti(root / f"v{i}.nii.gz", vol)
            write_nifti(root / f"m{i}.nii.gz", mask[:-2] if i == bad else mask)
        cases.append({"id": f"v{i}", "image": str(root / f"v{i}.nii.gz"),
                      "label": str(root / f"m{i}.nii.gz")})
    return cases


def test_a_mask_error_while_the_memory_cache_fills_is_raised_every_time(tmp_path):
    """20 times: the DataError names both files, the cases after the failing one are not
    preprocessed (before, a filling thread went on with them while the error left, and the
    process aborted if it ended meanwhile), and no filling thread is left running."""
    from medxfer.data.steps import LoadCased

    loaded: list[str] = []

    class RecordingLoad(LoadCased):
        def __call__(self, case):
            loaded.append(case["id"])
            return super().__call__(case)

    cases = _volumes(tmp_path)
    chain = preprocess_transform(PreprocessConfig(), task="segmentation", spatial_dims=3,
                                 num_classes=2, imagenet_norm=False)
    chain.transforms = [RecordingLoad("segmentation", 2), *chain.transforms[1:]]
    before = threading.active_count()
    for _ in range(20):
        loaded.clear()
        with pytest.raises(DataError, match=r"v3\.nii\.gz' has shape \(24, 24, 24\) but its "
                                            r"mask .*m3\.nii\.gz' has shape \(22, 24, 24\)"):
            cached_dataset(cases, chain, cache="memory", cache_dir=None, key={})
        assert loaded == ["v0", "v1", "v2", "v3"]
        assert _threads_back_to(before), threading.enumerate()
    good = cached_dataset(cases[:3], chain, cache="memory", cache_dir=None, key={})
    assert len(good) == 3 and good[0]["label"].shape == (1, 24, 24, 24)


def _threads_back_to(count: int, timeout: float = 10.0) -> bool:
    """Whether the filling threads end (they are told to stop, idle, when the pool closes;
    before, one went on preprocessing the remaining cases)."""
    import time

    deadline = time.monotonic() + timeout
    while threading.active_count() > count and time.monotonic() < deadline:
        time.sleep(0.01)
    # at most as many as before: a thread an earlier test left (a worker queue's feeder)
    # may end meanwhile
    return threading.active_count() <= count


SCRIPT = """
import sys
from medxfer.config import PreprocessConfig
from medxfer.data.datasets import cached_dataset
from medxfer.data.preprocess import preprocess_transform
from medxfer.errors import DataError
from tests.data.test_cache_errors import _volumes
from pathlib import Path

cases = _volumes(Path(sys.argv[1]), n=30, size=48)
chain = preprocess_transform(PreprocessConfig(), task="segmentation", spatial_dims=3,
                             num_classes=2, imagenet_norm=False)
try:
    cached_dataset(cases, chain, cache="memory", cache_dir=None, key={})
except DataError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def _python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get(
        "PYTHONPATH", "")]), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_the_process_exits_2_without_an_abort(tmp_path):
    """The abort happened at exit, with a filling thread still in native code: only a
    process of its own shows it. Three processes, each exit 2 with the message."""
    (tmp_path / "fill.py").write_text(SCRIPT)
    for _ in range(3):
        done = _python([str(tmp_path / "fill.py"), str(tmp_path / "data")], REPO)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "terminate called" not in done.stderr
        assert "m3.nii.gz' has shape (46, 48, 48)" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["auto", "memory", "none"])
def test_medxfer_run_on_a_truncated_image_exits_2_whatever_the_cache(tmp_path, cache):
    """A truncated image passes the header checks and fails where it is first read (while
    the memory cache fills; uncached, in training or evaluation): the run ends with one
    message naming it (before, under the memory cache: exit 134)."""
    import json

    data = tmp_path / "data"
    _volumes(data, n=10, size=32, bad=-1)
    raw = (data / "v4.nii.gz").read_bytes()
    (data / "v4.nii.gz").write_bytes(raw[: len(raw) // 2])
    (data / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "fg"},
                                                   "training": [
        {"image": f"v{i}.nii.gz", "label": f"m{i}.nii.gz"} for i in range(10)]}))
    (data / "imagesTr").mkdir()  # an MSD folder (its dataset.json names the files)
    for attempt in range(2 if cache in ("auto", "memory") else 1):
        done = _python(["-m", "medxfer", "run", "--output", str(tmp_path / f"run{attempt}"),
                        "--set", "task=segmentation", "--set", f"data.path={data}",
                        "--set", "model.backbone.name=monai_unet", "--set",
                        f"data.cache={cache}", "--set", "train.epochs=1", "--set",
                        "train.batch_size=2"], tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        assert "terminate called" not in done.stderr and "Traceback" not in done.stderr
        assert "v4.nii.gz' is not a readable NIfTI file" in done.stderr
