"""scripts/gpu_check.sh: the parts that need no GPU (the job itself runs on a lent one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "gpu_check.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def gpu_check(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_without_a_verb_it_prints_its_usage():
    done = gpu_check()
    assert done.returncode == 2
    assert "usage: bash scripts/gpu_check.sh prepare|run" in done.stderr


def test_run_without_a_prepared_kit_says_what_to_do(tmp_path):
    done = gpu_check("run", KIT=str(tmp_path / "kit"), OUT=str(tmp_path / "out"))
    assert done.returncode == 2
    assert "run 'bash scripts/gpu_check.sh prepare' first" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_kit_folder_is_ignored_by_git():
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split()
    assert "/.gpu_kit/" in ignored and "/.gpu_kit.tmp/" in ignored


def test_prepare_names_a_python_without_the_dependencies(tmp_path):
    """prepare reads the versions to carry from the project's environment."""
    python = shutil.which("python3") or "python3"
    probe = subprocess.run([python, "-c", "import monai"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{python} has MONAI; the check needs one without it")
    done = gpu_check("prepare", PYTHON=python, KIT=str(tmp_path / "kit"))
    if "is missing; run this from a checkout beside ../shared" in done.stderr:
        pytest.skip("../shared/data is not here")
    assert done.returncode == 2
    assert f"{python} lacks one of: monai" in done.stderr
    assert not (tmp_path / "kit").exists() and not (tmp_path / "kit.tmp").exists()
