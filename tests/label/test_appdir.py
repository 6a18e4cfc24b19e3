"""The app folder `medxfer label init` writes (which run a model serves: test_served.py)."""

from __future__ import annotations

import json
import os

import pytest

from medxfer.errors import ConfigError
from medxfer.label.appdir import APP_CONFIG, model_name, read_app, write_app
from tests.workflows.export.helpers import SEG_3D, make_run


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "my run.v1", SEG_3D, spatial_dims=3, num_classes=3).run_dir


def test_init_writes_main_py_and_the_runs(run_dir, tmp_path):
    models = write_app(tmp_path / "app", [run_dir])
    assert models == {"my_run_v1": run_dir.resolve()}
    main_py = (tmp_path / "app" / "main.py").read_text(encoding="utf-8")
    assert "from medxfer.label.app import MedxferLabelApp" in main_py
    assert json.loads((tmp_path / "app" / APP_CONFIG).read_text(encoding="utf-8")) == {
        "models": {"my_run_v1": str(run_dir.resolve())}}
    assert read_app(tmp_path / "app") == {"my_run_v1": run_dir.resolve()}


def test_init_refuses_used_folders_non_runs_and_name_clashes(run_dir, tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("keep")
    with pytest.raises(ConfigError, match="not an empty folder"):
        write_app(used, [run_dir])
    with pytest.raises(ConfigError, match="not a finished medxfer run"):
        write_app(tmp_path / "a1", [tmp_path])
    twin = make_run(tmp_path / "other" / "my run.v1", SEG_3D, spatial_dims=3,
                    num_classes=3).run_dir
    with pytest.raises(ConfigError, match="would both be model 'my_run_v1'"):
        write_app(tmp_path / "a2", [run_dir, twin])
    assert not (tmp_path / "a1").exists() and not (tmp_path / "a2").exists()
    assert [p.name for p in used.iterdir()] == ["x"]


def test_read_app_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="medxfer label init"):
        read_app(tmp_path)
    (tmp_path / APP_CONFIG).write_text("{\"runs\": 1}")
    with pytest.raises(ConfigError, match=APP_CONFIG):
        read_app(tmp_path)


def test_model_name():
    assert model_name(os.path.join("runs", "hippo 3d!")) == "hippo_3d"
