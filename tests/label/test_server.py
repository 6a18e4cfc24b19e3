"""The real MONAI Label server serving a trained medxfer run, over HTTP on 127.0.0.1.

A small segmentation run is trained first: MSD Hippocampus (../shared/data) when it is
there, else the embedded 3D sample data. `medxfer label serve` starts MONAI Label on a
free loopback port with images the run never saw; the tests call `GET /info/`,
`POST /infer/<model>` and `POST /train/<model>` (MONAI Label's train button), and check the
returned masks against the ground truth.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monailabel", reason='MONAI Label is not installed: pip install '
                    '"medxfer[label]" (CI installs it)')

#: Training the run (about 3 minutes on 2 free cores) happens in the first test's set-up.
pytestmark = pytest.mark.timeout(1800)

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


def _shared_data() -> Path:
    env = os.environ.get("MEDXFER_SHARED_DATA")
    return Path(env) if env else (REPO.parent / "shared" / "data").resolve()


def _hippocampus_manifest(root: Path, path: Path) -> Path:
    """A manifest of the first cases of each split of the project's fixed split."""
    rows = list(csv.DictReader((REPO / "configs" / "hippocampus_split.csv").open()))
    lines = ["id,image,label,split"]
    for split, count in CASES.items():
        for row in [r for r in rows if r["split"] == split][:count]:
            name = f"{row['id']}.nii.gz"
            lines.append(f"{row['id']},{root / 'imagesTr' / name},{root / 'labelsTr' / name},"
                         f"{split}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _train(run_dir: Path) -> tuple[str, list[str]]:
    """Train the run; returns (source name, the class names)."""
    from medxfer.config import load_config
    from medxfer.workflows.run import run_pipeline

    hippocampus = _shared_data() / "msd_hippocampus"
    if hippocampus.is_dir():
        manifest = _hippocampus_manifest(hippocampus, run_dir.parent / "hippocampus.csv")
        config = load_config(None, ["task=segmentation", f"data.path={manifest}",
                                    *HIPPOCAMPUS])
        source = "hippocampus"
    else:
        config = load_config(REPO / "configs" / "sample_segmentation_3d.yaml",
                             ["eval.bootstrap=0"])
        source = "sample"
    run_pipeline(config, run_dir, progress=False)
    names = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))["class_names"]
    return source, names


def _test_cases(run_dir: Path, count: int) -> list[dict[str, str]]:
    """Cases of the run's test split (images it never trained on) with their masks."""
    from medxfer.config import load_config
    from medxfer.data.datalist import build_datalist
    from medxfer.data.sample import ensure_sample_data

    rows = list(csv.DictReader((run_dir / "splits.csv").open()))
    test_ids = [r["id"] for r in rows if r["split"] == "test"][:count]
    data_path = load_config(run_dir / "config.yaml").data.path or ensure_sample_data("segmentation")
    cases = {c["id"]: c for c in build_datalist(data_path).cases}
    return [cases[i] for i in test_ids]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, method: str = "GET", body: bytes | None = None,
             timeout: float = 300) -> tuple[bytes, str]:
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read(), response.headers.get("content-type", "")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, model name, test cases, class names, source, app folder) of a live server."""
    root = tmp_path_factory.mktemp("label")
    run_dir = root / "tiny_seg"
    source, names = _train(run_dir)
    cases = _test_cases(run_dir, 2)
    studies = root / "studies"
    studies.mkdir()
    for case in cases:
        shutil.copy(case["image"], studies / Path(case["image"]).name)
    port = _free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "medxfer", "label", "serve", "--run", str(run_dir),
         "--studies", str(studies), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n"
                            + (root / "server.log").read_text(encoding="utf-8")[-4000:])
            try:
                _request(f"{base}/info/", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the server did not answer within "
                                f"{SERVE_TIMEOUT} s:\n" + (root / "server.log").read_text(encoding="utf-8")[-4000:])
                time.sleep(1)
        yield {"base": base, "model": run_dir.name, "cases": cases, "names": names,
               "source": source, "app": run_dir / "label_app", "log": root / "server.log",
               "studies": studies}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _dice(pred: np.ndarray, truth: np.ndarray, classes: int) -> float:
    scores = []
    for c in range(1, classes):
        p, t = pred == c, truth == c
        if p.sum() + t.sum():
            scores.append(2.0 * float((p & t).sum()) / float(p.sum() + t.sum()))
    return float(np.mean(scores))


def test_info_lists_the_run_as_a_model_and_its_trainer(server):
    body, _ = _request(f"{server['base']}/info/")
    info = json.loads(body)
    model = info["models"][server["model"]]
    assert model["type"] == "segmentation" and model["dimension"] == 3
    assert model["labels"] == {n: i for i, n in enumerate(server["names"]) if i}
    assert server["model"] in info["trainers"]
    assert info["datastore"]["total"] == len(server["cases"])
    assert "Uvicorn running on http://127.0.0.1:" in server["log"].read_text(encoding="utf-8")


def test_infer_returns_masks_that_match_the_ground_truth(server):
    classes = len(server["names"])
    for case in server["cases"]:
        image_id = Path(case["image"]).name.split(".")[0]
        body, _ = _request(f"{server['base']}/infer/{server['model']}?image={image_id}"
                           "&output=image", method="POST", body=b"")
        mask_path = server["studies"].parent / f"{image_id}_served.nii.gz"
        mask_path.write_bytes(body)
        mask = np.asarray(nib.load(str(mask_path)).dataobj)
        truth = np.asarray(nib.load(case["label"]).dataobj)
        assert mask.shape == nib.load(case["image"]).shape == truth.shape
        assert set(np.unique(mask).tolist()) <= set(range(classes))
        dice = _dice(mask, truth, classes)
        print(f"{server['source']} {image_id}: Dice {dice:.3f}")
        assert dice > 0.7, (image_id, dice)


@pytest.mark.slow
def test_train_button_fine_tunes_with_medxfer_and_the_model_serves_it(server):
    final = server["studies"] / "labels" / "final"
    final.mkdir(parents=True, exist_ok=True)
    for case in server["cases"]:
        shutil.copy(case["label"], final / Path(case["image"]).name)
    # a third labelled image: the first one again under another name
    extra = server["cases"][0]
    shutil.copy(extra["image"], server["studies"] / "extra_copy.nii.gz")
    shutil.copy(extra["label"], final / "extra_copy.nii.gz")
    time.sleep(2)  # the datastore picks up new files when it reloads
    params = json.dumps({"max_epochs": 1, "val_split": 0.34, "test_split": 0.34}).encode()
    body, _ = _request(f"{server['base']}/train/{server['model']}?run_sync=true",
                       method="POST", body=params, timeout=600)
    runs = list((server["app"] / "finetuned" / server["model"]).iterdir())
    assert len(runs) == 1 and (runs[0] / "metrics.json").is_file(), body[-2000:]
    image_id = Path(server["cases"][0]["image"]).name.split(".")[0]
    body, _ = _request(f"{server['base']}/infer/{server['model']}?image={image_id}"
                       "&output=json", method="POST", body=b"")
    assert json.loads(body)["run"] == str(runs[0])
    info = json.loads(_request(f"{server['base']}/info/")[0])
    assert info["train_stats"][server["model"]]["run"] == str(runs[0])
