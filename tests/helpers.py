"""Helpers for tests that fake installed plugin distributions."""

from __future__ import annotations

import textwrap
from pathlib import Path


def make_distribution(site: Path, dist: str, version: str, entry_points: dict[str, str],
                      modules: dict[str, str] | None = None) -> Path:
    """Write a fake installed distribution (dist-info + modules) under ``site``.

    Args:
        site: A folder that the test puts on ``sys.path`` / ``PYTHONPATH``.
        dist: Distribution name.
        version: Its version.
        entry_points: ``medxfer`` entry-point name -> module.
        modules: Module name -> source text to write beside it.
    """
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = ["[medxfer]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    return info


def fake_medmnist(path: Path, *, n: int = 24, size: int = 16, seed: int = 0) -> Path:
    """A tiny 2D MedMNIST-like .npz: two classes, class 1 with a bright square."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", n), ("val", n // 2), ("test", n // 2)):
        labels = np.arange(count) % 2
        images = rng.integers(40, 120, (count, size, size)).astype(np.uint8)
        images[labels == 1, 4:12, 4:12] += 100  # class 1: a bright square
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)
    return path


def stop_run_pipeline(monkeypatch, *, write_checkpoint: bool, stop) -> None:
    """Make ``run``'s pipeline write a run's first files (and a checkpoint, if asked), then
    call ``stop()`` (which raises KeyboardInterrupt, sends a signal ...)."""
    import medxfer.workflows.run_folder as run_folder  # where `run` calls the pipeline

    def stopped(config, output, **kwargs):
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.yaml").write_text("{}\n")
        if write_checkpoint:
            (output / "checkpoints").mkdir()
            (output / "checkpoints" / "last.pt").write_bytes(b"x")
        stop()

    monkeypatch.setattr(run_folder, "run_pipeline", stopped)
