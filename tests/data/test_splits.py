"""Splits: patient grouping, stratification, k-fold, stored splits, split checks."""

from __future__ import annotations

from collections import Counter

import pytest

from medxfer.data.splits import assign_splits, check_splits, limit_cases, split_kfold
from medxfer.errors import DataError


def _cases(n_patients=60, per_patient=3):
    return [{"id": f"p{p}_{k}", "label": p % 3, "patient_id": f"p{p}", "split": None}
            for p in range(n_patients) for k in range(per_patient)]


@pytest.mark.parametrize("seed", range(5))
def test_no_patient_in_two_splits(seed):
    cases = assign_splits(_cases(), val_fraction=0.2, test_fraction=0.2, seed=seed)
    owner = {}
    for c in cases:
        assert owner.setdefault(c["patient_id"], c["split"]) == c["split"]
    sizes = Counter(c["split"] for c in cases)
    assert sizes["test"] == pytest.approx(36, abs=3) and sizes["val"] == pytest.approx(36, abs=3)
    for split in ("train", "val", "test"):  # stratified: every class in every split
        assert {c["label"] for c in cases if c["split"] == split} == {0, 1, 2}


def test_seeded_and_different_seeds_differ():
    a = assign_splits(_cases(), seed=1)
    assert a == assign_splits(_cases(), seed=1)
    assert a != assign_splits(_cases(), seed=2)


def test_kfold_groups_and_balance():
    cases = _cases()
    folds = split_kfold(cases, folds=5, seed=0)
    per_patient = {}
    for c, k in zip(cases, folds):
        assert per_patient.setdefault(c["patient_id"], k) == k
    assert sorted(Counter(folds).values()) == [36] * 5
    split = assign_splits(cases, folds=5, fold=2, test_fraction=0.2)
    assert Counter(c["split"] for c in split)["test"] == 36
    assert Counter(c["split"] for c in split)["val"] == pytest.approx(29, abs=4)


def test_stored_split_kept_and_leak_refused():
    cases = _cases(6, 1)
    for c, s in zip(cases, ["train", "train", "val", "val", "test", "test"]):
        c["split"] = s
    assert [c["split"] for c in assign_splits(cases)] == [c["split"] for c in cases]
    cases[1]["patient_id"] = cases[2]["patient_id"]
    with pytest.raises(DataError, match="appears in both the 'train' and 'val'"):
        assign_splits(cases)
    cases[0]["split"] = None
    with pytest.raises(DataError, match="have no split"):
        assign_splits(cases)


def test_empty_split_refused():
    cases = assign_splits(_cases(4, 1), val_fraction=0.0, test_fraction=0.25)
    with pytest.raises(DataError, match="the 'val' split is empty"):
        check_splits(cases, task="classification", class_names=["a", "b", "c"], source="toy")


def test_class_missing_from_training_split():
    cases = [{"id": str(i), "label": 0 if i < 6 else 1, "split": s}
             for i, s in enumerate(["train"] * 4 + ["val", "test", "val", "test"])]
    with pytest.raises(DataError, match="class 'b' has no case in the training split"):
        check_splits(cases, task="classification", class_names=["a", "b"], source="toy")


def test_limit_keeps_classes():
    cases = assign_splits(_cases(), seed=0)
    small = limit_cases(cases, 6, seed=0)
    assert Counter(c["split"] for c in small) == {"train": 6, "val": 6, "test": 6}
    assert {c["label"] for c in small if c["split"] == "train"} == {0, 1, 2}


def _four_cases(n: int) -> list[dict]:
    return [{"id": f"c{i}", "label": i % 2, "image": f"c{i}.png"} for i in range(n)]


def test_split_file_csv_and_json_fix_every_case(tmp_path):
    from medxfer.data.splits import apply_split_file

    cases = _four_cases(4)
    csv_file = tmp_path / "split.csv"
    csv_file.write_text("id,split\nc0,train\nc1,train\nc2,val\nc3,test\n", encoding="utf-8")
    json_file = tmp_path / "split.json"
    json_file.write_text('{"train": ["c0", "c1"], "val": ["c2"], "test": ["c3"]}',
                         encoding="utf-8")
    for file in (csv_file, json_file):
        out = apply_split_file(cases, str(file))
        assert [c["split"] for c in out] == ["train", "train", "val", "test"]
    assert "split" not in cases[0]  # copies, not the caller's dicts


@pytest.mark.parametrize("text, message", [
    ("id,split\nc0,train\nc1,train\nc2,val\n", "not in the file"),
    ("id,split\nc0,train\nc1,train\nc2,val\nc3,test\nc9,test\n", "not in the data"),
    ("id,split\nc0,train\nc1,train\nc2,val\nc3,holdout\n", "'holdout'"),
    ("id,split\nc0,train\nc0,val\nc1,train\nc2,val\nc3,test\n", "listed twice"),
    ("name,fold\nc0,1\n", "columns id and split"),
])
def test_split_file_errors_name_the_problem(tmp_path, text, message):
    from medxfer.data.splits import apply_split_file
    from medxfer.errors import DataError

    file = tmp_path / "split.csv"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        apply_split_file(_four_cases(4), str(file))


def test_split_file_path_is_relative_to_the_config(tmp_path):
    from medxfer.config import load_config

    (tmp_path / "run.yaml").write_text("data:\n  split: {file: splits/fixed.csv}\n",
                                       encoding="utf-8")
    config = load_config(tmp_path / "run.yaml")
    assert config.data.split.file == str(tmp_path.resolve() / "splits" / "fixed.csv")
