"""The embedded sample data: present in the repo, regenerated identically into a cache."""

from __future__ import annotations

import numpy as np

from medxfer.data import sample
from medxfer.data.readers import read_image


def test_repo_sample_data_is_used_when_present():
    path = sample.ensure_sample_data("classification")
    if sample.repo_sample_root().is_dir():
        assert path == sample.repo_sample_root() / "classification"
    assert len((path / "manifest.csv").read_text(encoding="utf-8").splitlines()) == 161


def test_generated_into_cache_without_the_repo(tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "repo_sample_root", lambda: tmp_path / "no-repo")
    monkeypatch.setenv("MEDXFER_CACHE", str(tmp_path / "cache"))
    path = sample.ensure_sample_data("segmentation")
    assert path == tmp_path / "cache" / "sample_data" / "segmentation_3d"
    assert len(list((path / "imagesTr").glob("*.nii.gz"))) == 12
    assert sample.ensure_sample_data("segmentation_3d") == path
    original = sample.Path(sample.__file__).resolve().parents[2] / "sample_data" / "segmentation_3d"
    if original.is_dir():  # deterministic: same voxels as the committed copy
        a = read_image(path / "imagesTr" / "sample_003.nii.gz").array
        b = read_image(original / "imagesTr" / "sample_003.nii.gz").array
        np.testing.assert_array_equal(a, b)


def test_sample_data_is_small():
    root = sample.repo_sample_root()
    if root.is_dir():
        assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) < 5 * 2 ** 20
