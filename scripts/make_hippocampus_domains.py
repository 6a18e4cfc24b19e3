"""Split MSD Task04 Hippocampus into two domains by the stored intensity type of its images.

The dataset's cases fall into two groups: 167 stored as float32 (intensities up to ~3000)
and 41 stored as uint8 (0-255), presumably from different acquisitions or processing.
This writes two manifests (``image``, ``label``, ``split``) into
``configs/hippocampus_domains/``:

* ``source_float32.csv``: the float32 cases, with the train/val/test split of
  ``configs/hippocampus_split.csv``;
* ``target_uint8.csv``: the uint8 cases, sorted by id, alternately train (the unlabelled
  adaptation data) and test, with every fifth training case moved to val.

Usage: ``.venv/bin/python scripts/make_hippocampus_domains.py [DATA_DIR]``
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    """Write the two manifests (paths relative to the manifest folder)."""
    import nibabel as nib

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", type=Path,
                        default=ROOT.parent / "shared" / "data" / "msd_hippocampus",
                        help="the MSD Task04 Hippocampus folder (holds imagesTr/, labelsTr/)")
    data = parser.parse_args(argv).data_dir.resolve()
    if not (data / "imagesTr").is_dir():
        parser.error(f"{str(data)!r} has no imagesTr/ folder: give the MSD Hippocampus folder")
    out = ROOT / "configs" / "hippocampus_domains"
    out.mkdir(parents=True, exist_ok=True)
    with open(ROOT / "configs" / "hippocampus_split.csv", newline="") as handle:
        split = {row["id"]: row["split"] for row in csv.DictReader(handle)}
    groups: dict[str, list[str]] = {"float32": [], "uint8": []}
    for image in sorted((data / "imagesTr").glob("hippocampus_*.nii.gz")):
        dtype = str(nib.load(image).get_data_dtype())
        groups.setdefault(dtype, []).append(image.name)
    rows = {"source_float32.csv": [(n, split[n.removesuffix(".nii.gz")])
                                   for n in groups["float32"]]}
    target = []
    for i, name in enumerate(groups["uint8"]):
        role = "test" if i % 2 else ("val" if i % 10 == 8 else "train")
        target.append((name, role))
    rows["target_uint8.csv"] = target
    for filename, cases in rows.items():
        with open(out / filename, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["id", "image", "label", "split"])
            for name, role in cases:
                rel = Path(os.path.relpath(data, out))
                writer.writerow([name.removesuffix(".nii.gz"), (rel / "imagesTr" / name).as_posix(),
                                 (rel / "labelsTr" / name).as_posix(), role])
        counts = {s: sum(r == s for _, r in cases) for s in ("train", "val", "test")}
        print(f"wrote {out / filename}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
