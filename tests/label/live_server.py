"""Helpers of tests/label/test_server.py: small Hippocampus runs, a live `medxfer label
serve` on a free loopback port, HTTP calls and label files."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
#: Hippocampus cases per split (of configs/hippocampus_split.csv) and a recipe that reaches a
#: test Dice of about 0.8 in a few minutes on 2 CPU cores.
CASES = {"train": 40, "val": 6, "test": 4}
HIPPOCAMPUS = ["data.preprocess.intensity=zscore", "data.format=manifest",
               "data.patch.size=[32,48,32]", "data.patch.samples_per_case=2",
               "data.patch.pos_fraction=0.7", "data.augment.preset=none",
               "model.backbone.name=monai_unet", "model.backbone.channels=[8,16,32,64]",
               "model.backbone.strides=[2,2,2]", "model.backbone.num_res_units=1",
               "model.backbone.pretrained=none", "strategy.name=full_finetune",
               "train.epochs=8", "train.batch_size=4", "train.optimizer.lr=0.01",
               "train.scheduler.warmup_epochs=0", "loss.name=dice_ce",
               "loss.include_background=false", "eval.bootstrap=0",
               "eval.sliding_window.roi_size=[32,48,32]", "eval.sliding_window.overlap=0.25",
               "data.classes=[background,Anterior,Posterior]"]
SERVE_TIMEOUT = 300


def shared_data() -> Path:
    env = os.environ.get("MEDXFER_SHARED_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data").resolve()


def hippocampus() -> Path | None:
    folder = shared_data() / "msd_hippocampus"
    return folder if folder.is_dir() else None


def split_rows(split: str) -> list[str]:
    """Case ids of one split of the project's fixed Hippocampus split."""
    rows = csv.DictReader((REPO / "configs" / "hippocampus_split.csv").open())
    return [r["id"] for r in rows if r["split"] == split]


def hippocampus_case(root: Path, case_id: str) -> dict[str, str]:
    name = f"{case_id}.nii.gz"
    return {"id": case_id, "image": str(root / "imagesTr" / name),
            "label": str(root / "labelsTr" / name)}


def train_run(run_dir: Path, overrides: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """Train a run on the first cases of each split (the embedded 3D sample without
    ../shared); returns (source name, class names)."""
    from medxfer.config import load_config
    from medxfer.workflows.run import run_pipeline

    root = hippocampus()
    if root is not None:
        lines = ["id,image,label,split"]
        for split, count in CASES.items():
            for case_id in split_rows(split)[:count]:
                case = hippocampus_case(root, case_id)
                lines.append(f"{case_id},{case['image']},{case['label']},{split}")
        manifest = run_dir.parent / f"{run_dir.name}.csv"
        manifest.write_text("\n".join(lines) + "\n")
        config = load_config(None, ["task=segmentation", f"data.path={manifest}",
                                    *HIPPOCAMPUS, *overrides])
        source = "hippocampus"
    else:
        config = load_config(REPO / "configs" / "sample_segmentation_3d.yaml",
                             ["eval.bootstrap=0", *overrides])
        source = "sample"
    run_pipeline(config, run_dir, progress=False)
    names = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["class_names"]
    return source, names


def run_test_cases(run_dir: Path, count: int) -> list[dict[str, str]]:
    """Cases of the run's test split (images it never trained on) with their masks."""
    from medxfer.config import load_config
    from medxfer.data.layouts import build_datalist
    from medxfer.data.sample import ensure_sample_data

    rows = list(csv.DictReader((run_dir / "splits.csv").open()))
    test_ids = [r["id"] for r in rows if r["split"] == "test"][:count]
    data_path = load_config(run_dir / "config.yaml").data.path or \
        ensure_sample_data("segmentation")
    cases = {c["id"]: c for c in build_datalist(data_path).cases}
    return [{**cases[i], "id": image_id(cases[i]["image"])} for i in test_ids]


def image_id(path: str | Path) -> str:
    """MONAI Label's id of a datastore image (its file name without extension)."""
    return Path(path).name.split(".")[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(command: list[str], log_path: Path, port: int) -> Iterator[str]:
    """Start ``medxfer label serve ...``; yields its base URL once ``/info/`` answers."""
    import requests

    log = log_path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "medxfer", "label", "serve", *command,
                                "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n"
                            + log_path.read_text(encoding="utf-8")[-4000:])
            try:
                requests.get(f"{base}/info/", timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"the server did not answer within {SERVE_TIMEOUT} s:\n"
                                + log_path.read_text(encoding="utf-8")[-4000:])
                time.sleep(1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def copy_images(cases: list[dict[str, str]], studies: Path) -> None:
    studies.mkdir(parents=True, exist_ok=True)
    for case in cases:
        shutil.copy(case["image"], studies / Path(case["image"]).name)


def info(base: str) -> dict[str, Any]:
    import requests

    response = requests.get(f"{base}/info/", timeout=60)
    response.raise_for_status()
    return response.json()


def infer_mask(base: str, model: str, image: str, out: Path) -> np.ndarray:
    """The served mask of datastore image ``image``."""
    import requests

    response = requests.post(f"{base}/infer/{model}", params={"image": image,
                                                               "output": "image"}, timeout=300)
    assert response.status_code == 200, response.text
    out.write_bytes(response.content)
    return np.asarray(nib.load(str(out)).dataobj)


def infer_json(base: str, model: str, image: str) -> dict[str, Any]:
    import requests

    response = requests.post(f"{base}/infer/{model}", params={"image": image, "output": "json"},
                             timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def put_label(base: str, image: str, label: Path) -> Any:
    """``PUT /datastore/label`` as 3D Slicer's Submit Label does; returns the response."""
    import requests

    with label.open("rb") as handle:
        return requests.put(f"{base}/datastore/label", params={"image": image, "tag": "final"},
                            files={"label": (label.name, handle, "application/octet-stream")},
                            data={"params": "{}"}, timeout=120)


def write_mask(path: Path, like: str | Path, array: np.ndarray | None = None, *,
               affine: np.ndarray | None = None) -> Path:
    """A NIfTI mask with ``like``'s header (or ``affine``), holding ``array`` (default: the
    file's own voxels)."""
    image = nib.load(str(like))
    data = np.asarray(image.dataobj) if array is None else array
    nib.save(nib.Nifti1Image(data, image.affine if affine is None else affine), str(path))
    return path


def swapped(label: str | Path) -> np.ndarray:
    """A Hippocampus mask with its two structures swapped (anterior <-> posterior)."""
    data = np.asarray(nib.load(str(label)).dataobj).astype(np.uint8)
    out = data.copy()
    out[data == 1], out[data == 2] = 2, 1
    return out


def dice(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    scores = []
    for c in range(1, classes):
        p, t = pred == c, truth == c
        if p.sum() + t.sum():
            scores.append(2.0 * float((p & t).sum()) / float(p.sum() + t.sum()))
    return float(np.mean(scores))


def train(base: str, model: str, params: dict[str, Any]) -> Any:
    """``POST /train/<model>?run_sync=true`` (MONAI Label's train button, waited for)."""
    import requests

    return requests.post(f"{base}/train/{model}", params={"run_sync": "true"}, json=params,
                         timeout=900)
