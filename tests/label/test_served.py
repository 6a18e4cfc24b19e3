"""Which run a MONAI Label model serves: the pointer, its history and restoring."""

from __future__ import annotations

import json

import pytest

from medxfer.errors import CheckpointError, ConfigError
from medxfer.label import served
from medxfer.label.appdir import finetuned_dir
from medxfer.locking import locked_folder


@pytest.fixture
def app(tmp_path):
    """(app folder, original run folder) with two finished fine-tuned runs, a and b."""
    app, original = tmp_path / "app", tmp_path / "original"
    for run in (finetuned_dir(app, "m") / "a", finetuned_dir(app, "m") / "b"):
        run.mkdir(parents=True)
        (run / "model.safetensors").write_bytes(b"x")
    return app, original


def _promote(app, run, previous):
    served.record(app, "m", {"event": served.PROMOTED, "candidate": run, "previous": previous},
                  serve=run)


def test_without_a_pointer_the_original_run_is_served(app):
    app, original = app
    assert served.served_run(app, "m", original) == original
    assert served.read_pointer(app, "m") == {"served": None, "history": []}
    assert served.run_id(app, "m", original) == "original"


def test_only_promoted_runs_are_served_and_refused_ones_never(app):
    app, original = app
    served.record(app, "m", {"event": served.REFUSED, "candidate": "a"})
    assert served.served_run(app, "m", original) == original
    _promote(app, "b", "original")
    assert served.served_run(app, "m", original) == finetuned_dir(app, "m") / "b"
    assert served.run_id(app, "m", finetuned_dir(app, "m") / "b") == "b"
    history = served.read_pointer(app, "m")["history"]
    assert [(e["event"], e["served"]) for e in history] == [("refused", "original"),
                                                          ("promoted", "b")]
    with pytest.raises(ConfigError, match="'a' was never promoted"):
        served.restore(app, "m", original, "a")


def test_restore_goes_back_and_forth(app):
    app, original = app
    with pytest.raises(ConfigError, match="nothing to restore"):
        served.restore(app, "m", original)
    _promote(app, "a", "original")
    _promote(app, "b", "a")
    assert served.restore(app, "m", original) == "a"
    assert served.served_run(app, "m", original).name == "a"
    assert served.restore(app, "m", original) == "b"  # back to the run served before
    assert served.restore(app, "m", original, "original") == "original"
    assert served.served_run(app, "m", original) == original
    assert served.last_event(app, "m", served.RESTORED)["previous"] == "b"


def test_a_pointer_to_a_missing_or_unreadable_run_says_how_to_recover(app):
    app, original = app
    _promote(app, "a", "original")
    (finetuned_dir(app, "m") / "a" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="medxfer label restore"):
        served.served_run(app, "m", original)
    served.pointer_path(app, "m").write_text("{not json")
    with pytest.raises(CheckpointError, match="served.json"):
        served.served_run(app, "m", original)
    with pytest.raises(ConfigError, match="not a finished fine-tuned run"):
        served.run_folder(app, "m", original, "../../elsewhere")


def test_the_pointer_is_replaced_whole(app):
    app, original = app
    _promote(app, "a", "original")
    folder = finetuned_dir(app, "m")
    assert sorted(p.name for p in folder.iterdir()) == ["a", "b", "served.json"]
    assert json.loads(served.pointer_path(app, "m").read_text())["served"] == "a"


def test_restore_waits_for_no_one_while_a_finetuning_holds_the_model(app):
    app, original = app
    _promote(app, "a", "original")
    with locked_folder(finetuned_dir(app, "m")):
        with pytest.raises(ConfigError, match="in use by another medxfer process"):
            served.restore(app, "m", original, "original")
    assert served.served_run(app, "m", original).name == "a"
