"""Dataset inspection and the ``medxfer data inspect`` command."""

from __future__ import annotations

import numpy as np

from medxfer.cli.app import main
from medxfer.data.inspect import summarize_dataset
from medxfer.data.sample import ensure_sample_data


def test_summary_of_sample_classification():
    summary = summarize_dataset(ensure_sample_data("classification"), max_read=8)
    assert summary.counts["all"] == {"normal": 80, "lesion": 80}
    assert summary.patients == 80 and summary.n_read == 8
    assert summary.shapes == {(1, 64, 64): 160}  # headers of every case
    assert "all voxels of 8 of 160 cases" in summary.intensity_source


def test_cli_inspect_writes_montage_and_never_overwrites(tmp_path, capsys):
    data = ensure_sample_data("segmentation_3d")
    assert main(["data", "inspect", str(data), "--output", str(tmp_path), "--max-read", "4"]) == 0
    assert main(["data", "inspect", str(data), "--output", str(tmp_path), "--max-read", "4"]) == 0
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["segmentation_3d_montage.png", "segmentation_3d_montage_1.png"]
    out = capsys.readouterr().out
    assert "lesion" in out and "(1.5, 1.5, 1.5)" in out


def test_cli_inspect_bad_path(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "nothing"), "--output", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_inspect_output_that_is_a_file(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"mine")
    data = ensure_sample_data("classification")
    assert main(["data", "inspect", str(data), "--output", str(tmp_path / "a.png")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "a.png").read_bytes() == b"mine"


def test_cli_inspect_real_sets(shared_data, tmp_path):
    for path in (shared_data / "medmnist" / "breastmnist.npz", shared_data / "msd_hippocampus",
                 shared_data / "dicom" / "PGBM-003"):
        assert main(["data", "inspect", str(path), "--output", str(tmp_path),
                     "--max-read", "8", "--samples", "4"]) == 0
    assert len(list(tmp_path.glob("*_montage.png"))) == 3


def test_inspect_reports_cases_of_other_dimensionality_or_channels(tmp_path, capsys):
    """A 4D NIfTI (two channels) and a 2D slice among single-channel volumes: inspection
    names them, as a run would refuse them."""
    import numpy as np

    from tests.data.datafiles import write_nifti

    lines = ["image,label"]
    for i in range(5):
        vol = np.random.default_rng(i).random((6, 6, 6)).astype(np.float32)
        vol = np.stack([vol, vol], -1) if i == 2 else vol[..., 0] if i == 4 else vol
        write_nifti(tmp_path / f"v{i}.nii.gz", vol)
        lines.append(f"v{i}.nii.gz,{i % 2}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    problems = summarize_dataset(tmp_path).problems
    assert len(problems) == 2
    assert "1 case of 5 read is 2D among 3D images" in problems[0]
    assert "v4.nii.gz" in problems[0]
    assert "1 case of 5 read has 2 channels, the others 1" in problems[1]
    assert "v2.nii.gz" in problems[1] and "v0" not in problems[1]
    assert main(["data", "inspect", str(tmp_path), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err  # reported in full, then exit 2: a run refuses them
    assert "is 2D among 3D images" in err and "has 2 channels" in err
    assert "2 problems a run would refuse" in err
    assert summarize_dataset(ensure_sample_data("classification"), max_read=8).problems == []


def _dicom_manifest(tmp_path, volume):
    """A segmentation manifest of DICOM folders whose ``series_uid`` and
    ``label_series_uid`` cells are filled only where a folder holds two series."""
    from tests.data.datafiles import write_dicom_series

    mask = (volume > volume.mean()).astype(np.int16)
    write_dicom_series(tmp_path / "a_img", volume, series_uid="1.2.3.4.100")
    write_dicom_series(tmp_path / "a_img", volume[:3], series_uid="1.2.3.4.101")
    write_dicom_series(tmp_path / "a_mask", mask, series_uid="1.2.3.4.110")
    write_dicom_series(tmp_path / "b_img", volume, series_uid="1.2.3.4.200")
    write_dicom_series(tmp_path / "b_mask", mask, series_uid="1.2.3.4.210")
    write_dicom_series(tmp_path / "b_mask", mask[:3], series_uid="1.2.3.4.211")
    manifest = tmp_path / "cases.csv"
    manifest.write_text(
        "id,image,label,series_uid,label_series_uid\n"
        f"a,{tmp_path / 'a_img'},{tmp_path / 'a_mask'},1.2.3.4.100,\n"
        f"b,{tmp_path / 'b_img'},{tmp_path / 'b_mask'},,1.2.3.4.210\n")
    return manifest


def test_inspect_takes_empty_series_uid_cells_as_not_given_like_run(tmp_path, tiny_volume, capsys):
    """An empty ``series_uid`` / ``label_series_uid`` cell names no series, in inspect as in
    run's loader (it was passed on as the UID ``''``: "has no series ''")."""
    from medxfer.data.layouts import build_datalist
    from medxfer.data.steps import LoadCased

    manifest = _dicom_manifest(tmp_path, tiny_volume)
    summary = summarize_dataset(manifest)
    assert summary.datalist.task == "segmentation"
    assert summary.shapes == {(1, 5, 6, 4): 2}
    assert all(s.mask is not None and s.mask.shape == (1, 5, 6, 4) for s in summary.samples)
    load = LoadCased("segmentation")
    for case, sample in zip(build_datalist(manifest).cases, summary.samples):
        loaded = load(case)
        np.testing.assert_array_equal(loaded["image"].numpy(), sample.image)
        np.testing.assert_array_equal(loaded["label"].numpy(), sample.mask)
    assert main(["data", "inspect", str(manifest), "--output", str(tmp_path / "out")]) == 0
    assert "has no series" not in capsys.readouterr().err


def test_inspect_a_mask_folder_of_two_series_names_the_case_and_label_series_uid(
        tmp_path, tiny_volume, capsys):
    manifest = _dicom_manifest(tmp_path, tiny_volume)
    manifest.write_text(manifest.read_text().replace(",1.2.3.4.210", ","))
    assert main(["data", "inspect", str(manifest), "--output", str(tmp_path / "out")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "b_mask" in err and "holds 2 DICOM series" in err
    assert "the mask series to read in the manifest's 'label_series_uid' column for case 'b'" \
        in err


def test_inspect_estimates_the_run_cache_against_the_default_budget(tmp_path, monkeypatch):
    """8-bit 2D images count 1 byte a pixel (kept as uint8), volumes 4 bytes a voxel plus
    1 for the mask; a budget too small says what share fits."""
    from medxfer.data import cache_estimate as E
    from tests.data.datafiles import write_nifti, write_png

    for name in ("a", "b"):
        for i in range(3):
            write_png(tmp_path / "pngs" / name / f"{i}.png", np.zeros((20, 30), np.uint8))
    monkeypatch.setattr(E, "available_memory", lambda: 10_000)
    est = summary_json_of(tmp_path / "pngs")["cache"]
    assert est["bytes"] == 6 * 600 and est["stored_as"] == "uint8"
    assert est["budget"] == 5_000 and est["in_memory"] == 1.0
    volumes = tmp_path / "vols"
    for i in range(4):
        write_nifti(volumes / "imagesTr" / f"c{i}.nii.gz", np.zeros((10, 10, 10), np.float32))
        write_nifti(volumes / "labelsTr" / f"c{i}.nii.gz", np.zeros((10, 10, 10), np.uint8))
    est = summary_json_of(volumes)["cache"]
    assert est["bytes"] == 4 * (4000 + 1000) and est["stored_as"] == "float32"
    assert est["in_memory"] == 0.25  # one 5000-byte case of four fits in 5000 bytes
    assert "25% of the cases fit" in E.describe_estimate(est)


def summary_json_of(path):
    from medxfer.data.inspect import summary_json

    return summary_json(summarize_dataset(path))
