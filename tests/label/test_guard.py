"""The guard of MONAI Label's train button: score the served run and the candidate on the
same held-out cases, promote only a candidate at least as good."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medxfer.errors import DataError
from medxfer.label import guard, served
from medxfer.label.appdir import finetuned_dir
from tests.label.test_finetune import SAMPLE_SEG, _sample_cases
from tests.workflows.export.helpers import make_run


def test_mean_foreground_dice_conventions():
    truth = np.array([0, 1, 1, 2, 2, 0])
    assert guard.mean_foreground_dice(truth, truth, 3) == 1.0
    assert guard.mean_foreground_dice(np.zeros(6), truth, 3) == 0.0
    only_one = np.array([0, 1, 1, 0, 0, 0])
    assert guard.mean_foreground_dice(only_one, only_one, 3) == 1.0  # class 2 absent in both
    assert guard.mean_foreground_dice(np.array([0, 1, 0, 2, 0, 0]), truth, 3) == \
        pytest.approx((2 / 3 + 2 / 3) / 2)


def test_ties_promote_and_lower_scores_do_not():
    assert guard.promote(0.8, 0.8) and guard.promote(0.8, 0.81)
    assert not guard.promote(0.8, 0.7999)


def test_score_run_scores_served_masks_against_labels(repo_root, tmp_path):
    run = make_run(tmp_path / "run", SAMPLE_SEG, spatial_dims=3, num_classes=2).run_dir
    cases = _sample_cases(repo_root, 2)
    scores = guard.score_run(run, cases)
    assert sorted(scores["cases"]) == ["sample_000", "sample_001"]
    assert scores["dice"] == pytest.approx(np.mean(list(scores["cases"].values())))
    assert all(0.0 <= s <= 1.0 for s in scores["cases"].values())


@pytest.fixture
def app(repo_root, tmp_path):
    """(app folder, original run) of an untrained sample segmentation run."""
    source = make_run(tmp_path / "source", SAMPLE_SEG, spatial_dims=3, num_classes=2).run_dir
    return tmp_path / "app", source


@pytest.mark.slow
@pytest.mark.parametrize("better", [True, False])
def test_a_candidate_is_served_only_when_it_scores_at_least_as_well(app, repo_root, monkeypatch,
                                                                    better):
    app_dir, source = app
    real_score = guard.score_run
    scored = []

    def score_run(run_dir, cases):  # the real scores, the candidate's moved up or down
        result = real_score(run_dir, cases)
        scored.append((run_dir.name, sorted(c["id"] for c in cases)))
        if run_dir != source:
            result["dice"] = min(1.0, result["dice"] + 0.1) if better else result["dice"] - 0.1
        return result

    monkeypatch.setattr(guard, "score_run", score_run)
    cases = _sample_cases(repo_root, 5)
    out = guard.train_and_decide(app_dir, "m", source, cases, epochs=1)
    decision = out["last_decision"]
    candidate = finetuned_dir(app_dir, "m") / decision["candidate"]
    held_out = json.loads((candidate / "guard.json").read_text())["held_out"]
    rows = (candidate / "datastore.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows if r.endswith(",test")) == held_out
    assert scored == [("source", held_out), (candidate.name, held_out)]  # the same cases
    assert decision["event"] == ("promoted" if better else "refused")
    assert out["served_run"] == (candidate.name if better else "original")
    assert served.served_run(app_dir, "m", source) == (candidate if better else source)
    assert candidate.is_dir()  # a refused candidate is kept, never served
    assert decision["lr"] == pytest.approx(0.1 * 1e-3)  # a tenth of the source run's
    assert str(app_dir.parent) not in json.dumps(out)
    second = guard.train_and_decide(app_dir, "m", source, cases, epochs=1)
    assert second["last_decision"]["start"] == (candidate.name if better else "original")


def test_a_failed_finetuning_leaves_no_folder_and_is_recorded(app, repo_root, tmp_path):
    app_dir, source = app
    cases = _sample_cases(repo_root, 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    import nibabel as nib

    for case in cases:  # masks with nothing in them: medxfer refuses to train on them
        image = nib.load(case["label"])
        path = empty / f"{case['id']}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros(image.shape, np.uint8), image.affine), str(path))
        case["label"] = str(path)
    with pytest.raises(DataError, match="every training mask is empty"):
        guard.train_and_decide(app_dir, "m", source, cases, epochs=1)
    assert [p.name for p in finetuned_dir(app_dir, "m").iterdir()] == ["served.json"]
    failure = guard.decision_summary(app_dir, "m", source)["last_failure"]
    assert "every training mask is empty" in failure["error"]
    assert str(tmp_path) not in failure["error"] and "<empty>" in failure["error"]
    assert served.served_run(app_dir, "m", source) == source
