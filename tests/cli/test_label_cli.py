"""`medxfer label init` / `label serve`: app folders, errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from medxfer.cli import main
from medxfer.errors import ConfigError
from tests.workflows.export.helpers import SEG_3D, make_run


@pytest.fixture
def run_dir(tmp_path):
    return make_run(tmp_path / "hippo", SEG_3D, spatial_dims=3, num_classes=3).run_dir


def test_init_writes_the_app_and_refuses_to_overwrite_it(run_dir, tmp_path, capsys):
    app = tmp_path / "app"
    assert main(["label", "init", "--run", str(run_dir), "--app", str(app)]) == 0
    assert json.loads((app / "medxfer_app.json").read_text(encoding="utf-8"))["models"] == {
        "hippo": str(run_dir.resolve())}
    assert "medxfer label serve" in capsys.readouterr().err
    assert main(["label", "init", "--run", str(run_dir), "--app", str(app)]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_init_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["label", "init", "--run", str(tmp_path), "--app", str(tmp_path / "a")]) == 2
    assert "not a finished medxfer run" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_serve_without_monai_label_says_how_to_install(run_dir, tmp_path, capsys, monkeypatch):
    import medxfer.label as label

    def missing():
        raise ConfigError('MONAI Label is not installed: pip install "medxfer[label]"')

    monkeypatch.setattr(label, "require_monailabel", missing)
    studies = tmp_path / "studies"
    studies.mkdir()
    assert main(["label", "serve", "--run", str(run_dir), "--studies", str(studies)]) == 2
    assert "medxfer[label]" in capsys.readouterr().err
    assert not (run_dir / "label_app").exists()


def test_serve_checks_its_options_before_starting(run_dir, tmp_path, capsys, monkeypatch):
    import medxfer.label as label

    monkeypatch.setattr(label, "require_monailabel", lambda: None)
    assert main(["label", "serve", "--run", str(run_dir), "--studies",
                 str(tmp_path / "none")]) == 2
    assert "--studies" in capsys.readouterr().err
    studies = tmp_path / "studies"
    studies.mkdir()
    assert main(["label", "serve", "--studies", str(studies)]) == 2
    assert "pass --run" in capsys.readouterr().err
    other = make_run(tmp_path / "other", SEG_3D, spatial_dims=3, num_classes=3).run_dir
    app = tmp_path / "app"
    assert main(["label", "init", "--run", str(other), "--app", str(app)]) == 0
    assert main(["label", "serve", "--run", str(run_dir), "--app", str(app), "--studies",
                 str(studies)]) == 2
    assert "serves other runs" in capsys.readouterr().err


def test_the_default_host_is_loopback():
    from medxfer.label.server import DEFAULT_HOST, server_command

    assert DEFAULT_HOST == "127.0.0.1"
    command = server_command("app", "studies")
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[1:4] == ["-m", "monailabel.main", "start_server"]


def test_the_server_runs_behind_the_origin_guard():
    from medxfer.label.server import ALLOW_ORIGINS_ENV, server_command, server_env

    command = server_command("app", "studies")
    assert command[command.index("--uvicorn_app") + 1] == "medxfer.label.asgi:app"
    env = server_env(allow_origins=["http://Viewer.example:3000/"])
    assert json.loads(env[ALLOW_ORIGINS_ENV]) == ["http://viewer.example:3000"]
    assert json.loads(server_env()[ALLOW_ORIGINS_ENV]) == []


def test_serve_refuses_a_malformed_allow_origin(run_dir, tmp_path, capsys, monkeypatch):
    import medxfer.label as label

    monkeypatch.setattr(label, "require_monailabel", lambda: None)
    studies = tmp_path / "studies"
    studies.mkdir()
    assert main(["label", "serve", "--run", str(run_dir), "--studies", str(studies),
                 "--allow-origin", "viewer.example"]) == 2
    assert "not a web origin" in capsys.readouterr().err
    assert not (run_dir / "label_app").exists()


def test_restore_and_history(run_dir, tmp_path, capsys):
    from medxfer.label import served
    from medxfer.label.appdir import finetuned_dir

    app = tmp_path / "app"
    assert main(["label", "init", "--run", str(run_dir), "--app", str(app)]) == 0
    candidate = finetuned_dir(app, "hippo") / "20260101-000000"
    candidate.mkdir(parents=True)
    (candidate / "model.safetensors").write_bytes(b"x")
    served.record(app, "hippo", {"event": served.PROMOTED, "candidate": candidate.name,
                                 "previous": "original", "current_score": 0.5,
                                 "candidate_score": 0.75, "held_out": ["a", "b"]},
                  serve=candidate.name)
    capsys.readouterr()
    assert main(["label", "history", "--app", str(app), "--model", "hippo"]) == 0
    out = capsys.readouterr().out
    assert "promoted  20260101-000000 served 0.5000 vs candidate 0.7500 on 2" in out
    assert out.strip().endswith("serving: 20260101-000000")
    assert main(["label", "restore", "--app", str(app), "--model", "hippo"]) == 0
    assert "now serves run 'original'" in capsys.readouterr().err
    assert served.served_run(app, "hippo", run_dir) == run_dir
    assert main(["label", "restore", "--app", str(app), "--model", "nope"]) == 2
    assert "has no model 'nope'" in capsys.readouterr().err
    assert main(["label", "restore", "--app", str(app), "--model", "hippo", "--run",
                 "20990101-000000"]) == 2
    assert "never promoted" in capsys.readouterr().err
