"""The real MONAI Label server serving a trained medxfer run, over HTTP on 127.0.0.1.

A small segmentation run is trained first: MSD Hippocampus (../shared/data) when it is
there, else the embedded 3D sample data. `medxfer label serve` starts MONAI Label on a
free loopback port with images the run never saw: two of the run's test cases (their
masks are checked) and, with Hippocampus, 12 more to label. The tests call the endpoints
3D Slicer uses: `GET /info/`, `POST /infer/<model>`, `PUT /datastore/label`,
`POST /activelearning/<strategy>`, `POST /scoring/<method>` and `POST /train/<model>`
(the train button), as a browser page from another site would, and check what the
guard does with harmful and with good labels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("monailabel", reason='MONAI Label is not installed: pip install '
                    '"medxfer[label]" (CI installs it)')

import requests  # noqa: E402  (a MONAI Label dependency)

from tests.label.live_server import (copy_images, dice, free_port, hippocampus,  # noqa: E402
                                     hippocampus_case, image_id, infer_json, infer_mask, info,
                                     live_server, put_label, run_test_cases, split_rows,
                                     swapped, train, train_run, write_mask)

#: Training the run (about 3 minutes on 2 free cores) happens in the first test's set-up.
pytestmark = pytest.mark.timeout(1800)
#: Hippocampus cases to label (unseen by the run): rows 4.. of the fixed split's test cases.
TO_LABEL = 12
VIEWER = "http://viewer.example:3000"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A live server on a trained run: base URL, model, cases, class names, folders."""
    root = tmp_path_factory.mktemp("label")
    run_dir = root / "tiny_seg"
    source, names = train_run(run_dir)
    cases = run_test_cases(run_dir, 2)
    extra = [hippocampus_case(hippocampus(), i) for i in split_rows("test")[4:4 + TO_LABEL]] \
        if source == "hippocampus" else []
    studies = root / "studies"
    copy_images(cases + extra, studies)
    port = free_port()
    with live_server(["--run", str(run_dir), "--studies", str(studies), "--allow-origin",
                      VIEWER], root / "server.log", port) as base:
        yield {"base": base, "port": port, "model": run_dir.name, "cases": cases,
               "extra": extra, "names": names, "source": source, "root": root,
               "app": run_dir / "label_app", "log": root / "server.log", "studies": studies}


def _needs_hippocampus(server):
    if server["source"] != "hippocampus":
        pytest.skip("needs ../shared/data/msd_hippocampus (images to label beside the run's)")


def test_info_lists_the_run_as_a_model_and_its_trainer(server):
    meta = info(server["base"])
    model = meta["models"][server["model"]]
    assert model["type"] == "segmentation" and model["dimension"] == 3
    assert model["labels"] == {n: i for i, n in enumerate(server["names"]) if i}
    assert server["model"] in meta["trainers"]
    assert meta["datastore"]["total"] == len(server["cases"]) + len(server["extra"])
    stats = meta["train_stats"][server["model"]]
    assert stats["served_run"] == "original" and stats["metric"] == "mean foreground Dice"
    assert {"random", "first", "uncertainty"} <= set(meta["strategies"])
    assert "medxfer_uncertainty" in meta["scoring"]
    assert "Uvicorn running on http://127.0.0.1:" in server["log"].read_text(encoding="utf-8")


def test_infer_returns_masks_that_match_the_ground_truth(server):
    classes = len(server["names"])
    for case in server["cases"]:
        mask = infer_mask(server["base"], server["model"], case["id"],
                          server["root"] / f"{case['id']}_served.nii.gz")
        truth = np.asarray(nib.load(case["label"]).dataobj)
        assert mask.shape == nib.load(case["image"]).shape == truth.shape
        assert set(np.unique(mask).tolist()) <= set(range(classes))
        score = dice(mask, truth, classes)
        print(f"{server['source']} {case['id']}: Dice {score:.3f}")
        assert score > 0.7, (case["id"], score)


def test_no_host_paths_in_info_inference_or_samples(server):
    base, root = server["base"], str(server["root"])
    texts = [requests.get(f"{base}/info/", timeout=60).text,
             json.dumps(infer_json(base, server["model"], server["cases"][0]["id"])),
             requests.post(f"{base}/activelearning/random", json={}, timeout=60).text,
             requests.get(f"{base}/datastore/", params={"output": "all"}, timeout=60).text,
             requests.get(f"{base}/datastore/image/info",
                          params={"image": server["cases"][0]["id"]}, timeout=60).text]
    for text in texts:
        assert root not in text and str(Path(root).resolve()) not in text, text[:2000]
    assert infer_json(base, server["model"], server["cases"][0]["id"])["run"] == "original"


def test_unknown_image_id_or_host_path_is_400_naming_it(server):
    for image in ("no_such_image", str(server["cases"][0]["image"])):
        response = requests.post(f"{server['base']}/infer/{server['model']}",
                                 params={"image": image, "output": "json"}, timeout=60)
        assert response.status_code == 400, response.text
        assert repr(image) in response.json()["detail"]


def test_other_web_pages_are_refused_and_get_no_cors_allowance(server):
    base = server["base"]
    for method, url, headers in (
            ("GET", f"{base}/info/", {}),
            ("POST", f"{base}/train/{server['model']}", {}),
            ("OPTIONS", f"{base}/datastore/label",
             {"Access-Control-Request-Method": "PUT"})):
        response = requests.request(method, url, timeout=60,
                                    headers={"Origin": "https://evil.example", **headers})
        assert response.status_code == 403, (method, url, response.text)
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers
        assert "--allow-origin" in response.json()["detail"]
    rebound = requests.get(f"{base}/info/", headers={"Host": f"evil.example:{server['port']}"},
                           timeout=60)
    assert rebound.status_code == 403
    for origin in (VIEWER, f"http://127.0.0.1:{server['port']}"):  # allowed, and its own page
        response = requests.get(f"{base}/info/", headers={"Origin": origin}, timeout=60)
        assert response.status_code == 200
        assert response.headers.get("access-control-allow-origin") in (origin, "*")
    assert requests.get(f"{base}/info/", timeout=60).status_code == 200  # Slicer: no Origin


def test_bad_labels_are_refused_with_400_and_the_reason_and_not_saved(server):
    base, case = server["base"], server["cases"][0]
    tmp = server["root"]
    shape = nib.load(case["image"]).shape
    classes = len(server["names"])
    affine = nib.load(case["image"]).affine.copy()
    affine[:3, :3] *= 2.0
    bad = {
        "shape": write_mask(tmp / "small.nii.gz", case["label"], np.zeros((32, 32, 32), np.uint8)),
        "geometry": write_mask(tmp / "moved.nii.gz", case["label"], affine=affine),
        f"class {classes}": write_mask(tmp / "extra.nii.gz", case["label"],
                                       np.full(shape, classes, np.uint8)),
        "not class indices": write_mask(tmp / "float.nii.gz", case["label"],
                                        np.full(shape, 0.5, np.float32)),
    }
    for reason, path in bad.items():
        response = put_label(base, case["id"], path)
        assert response.status_code == 400, (reason, response.text)
        detail = response.json()["detail"]
        assert reason in detail and case["id"] in detail and str(tmp) not in detail, detail
    final = server["studies"] / "labels" / "final"
    assert not list(final.glob(f"{case['id']}*"))
    assert info(base)["datastore"]["completed"] == 0
    good = put_label(base, case["id"], Path(case["label"]))
    assert good.status_code == 200, good.text
    assert len(list(final.glob(f"{case['id']}*"))) == 1
    requests.delete(f"{base}/datastore/label", params={"id": case["id"], "tag": "final"},
                    timeout=60).raise_for_status()
    deadline = time.monotonic() + 60  # the datastore notices the removal when it reloads
    while info(base)["datastore"]["completed"] and time.monotonic() < deadline:
        time.sleep(1)
    assert info(base)["datastore"]["completed"] == 0


def test_active_learning_first_random_and_uncertainty(server):
    base = server["base"]
    unlabelled = sorted([c["id"] for c in server["cases"]]
                        + [image_id(c["image"]) for c in server["extra"]])
    first = requests.post(f"{base}/activelearning/first", json={}, timeout=60)
    assert first.status_code == 200, first.text
    assert first.json()["id"] == unlabelled[0] and "path" not in first.json()
    assert requests.post(f"{base}/activelearning/random", json={},
                         timeout=60).json()["id"] in unlabelled
    scores = requests.post(f"{base}/scoring/medxfer_uncertainty", params={"run_sync": "true"},
                           json={}, timeout=600)
    assert scores.status_code == 200, scores.text
    scored = scores.json()["scores"]
    assert sorted(scored) == unlabelled and all(0.0 <= s <= 1.0 for s in scored.values())
    pick = requests.post(f"{base}/activelearning/uncertainty", json={}, timeout=600)
    assert pick.status_code == 200, pick.text
    assert pick.json()["id"] == max(scored, key=scored.get)
    assert pick.json()["run"] == "original"
    print("uncertainty:", {k: round(v, 4) for k, v in sorted(scored.items())})


def test_a_failed_finetuning_reaches_the_client_and_leaves_no_folder(server):
    _needs_hippocampus(server)
    base, model = server["base"], server["model"]
    for case in server["extra"][:4]:  # empty masks: medxfer refuses to train on them
        empty = write_mask(server["root"] / f"{case['id']}_empty.nii.gz", case["label"],
                           np.zeros(nib.load(case["label"]).shape, np.uint8))
        assert put_label(base, image_id(case["image"]), empty).status_code == 200
    response = train(base, model, {"max_epochs": 1})
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "every training mask is empty" in detail and str(server["root"]) not in detail
    folder = server["app"] / "finetuned" / model
    assert [p.name for p in folder.iterdir()] == ["served.json"]
    stats = info(base)["train_stats"][model]
    assert stats["served_run"] == "original" and "mask is empty" in stats["last_failure"]["error"]


@pytest.mark.slow
def test_harmful_labels_are_refused_and_the_served_model_is_unchanged(server):
    """Labels of the wrong structure (anterior and posterior swapped) on every case the
    candidate learns from; the held-out cases the guard compares on keep true labels."""
    from medxfer.label.finetune import split_cases

    _needs_hippocampus(server)
    base, model, classes = server["base"], server["model"], len(server["names"])
    cases = [{**c, "id": image_id(c["image"])} for c in server["extra"]]
    held_out = [c for c in split_cases(cases, val_split=0.2, test_split=0.2)
                if c["split"] == "test"]
    before = {c["id"]: infer_mask(base, model, c["id"], server["root"] / f"{c['id']}_b.nii.gz")
              for c in held_out}
    for case in cases:
        label = Path(case["label"])
        if case["id"] not in before:
            label = write_mask(server["root"] / f"{case['id']}_swapped.nii.gz", label,
                               swapped(label))
        assert put_label(base, case["id"], label).status_code == 200
    response = train(base, model, {"max_epochs": 2})
    assert response.status_code == 200, response.text
    decision = info(base)["train_stats"][model]
    last = decision["last_decision"]
    print("harmful labels:", json.dumps(last))
    assert last["event"] == "refused" and decision["served_run"] == "original"
    assert last["candidate_score"] < last["current_score"]
    assert sorted(last["held_out"]) == sorted(before)
    for case in held_out:
        after = infer_mask(base, model, case["id"], server["root"] / f"{case['id']}_a.nii.gz")
        truth = np.asarray(nib.load(case["label"]).dataobj)
        print(f"served model on {case['id']}: Dice {dice(before[case['id']], truth, classes):.4f}"
              f" before, {dice(after, truth, classes):.4f} after")
        assert np.array_equal(after, before[case["id"]])
    assert infer_json(base, model, held_out[0]["id"])["run"] == "original"
    candidate = server["app"] / "finetuned" / model / last["candidate"]
    assert json.loads((candidate / "guard.json").read_text())["event"] == "refused"
    restore = subprocess.run([sys.executable, "-m", "medxfer", "label", "restore", "--app",
                              str(server["app"]), "--model", model, "--run", last["candidate"]],
                             capture_output=True, text=True)
    assert restore.returncode == 2 and "never promoted" in restore.stderr


@pytest.fixture(scope="module")
def early_server(tmp_path_factory):
    """A server on a run trained for 2 epochs only (a model early in a labelling project,
    test Dice about 0.35), with 16 unseen Hippocampus images to label."""
    root_data = hippocampus()
    if root_data is None:
        pytest.skip("needs ../shared/data/msd_hippocampus")
    root = tmp_path_factory.mktemp("early")
    run_dir = root / "early_seg"
    train_run(run_dir, ("train.epochs=2",))
    cases = [hippocampus_case(root_data, i) for i in split_rows("test")[4:20]]
    copy_images(cases, root / "studies")
    with live_server(["--run", str(run_dir), "--studies", str(root / "studies")],
                     root / "server.log", free_port()) as base:
        yield {"base": base, "model": run_dir.name, "cases": cases, "root": root,
               "app": run_dir / "label_app"}


@pytest.mark.slow
def test_good_labels_are_promoted_with_both_scores_and_can_be_restored(early_server):
    base, model = early_server["base"], early_server["model"]
    for case in early_server["cases"]:
        assert put_label(base, image_id(case["image"]), Path(case["label"])).status_code == 200
    # The early model is far from converged: a full step (the original run's learning rate)
    # rather than the default tenth.
    response = train(base, model, {"max_epochs": 4, "lr_factor": 1.0})
    assert response.status_code == 200, response.text
    stats = info(base)["train_stats"][model]
    last = stats["last_decision"]
    print("good labels:", json.dumps(last))
    assert last["event"] == "promoted" and stats["served_run"] == last["candidate"]
    assert last["candidate_score"] >= last["current_score"]
    assert len(last["held_out"]) == 3
    image = image_id(early_server["cases"][0]["image"])
    assert infer_json(base, model, image)["run"] == last["candidate"]
    restore = subprocess.run([sys.executable, "-m", "medxfer", "label", "restore", "--app",
                              str(early_server["app"]), "--model", model],
                             capture_output=True, text=True)
    assert restore.returncode == 0, restore.stderr
    assert infer_json(base, model, image)["run"] == "original"
    stats = info(base)["train_stats"][model]
    assert stats["served_run"] == "original"
    assert stats["last_restore"]["previous"] == last["candidate"]
