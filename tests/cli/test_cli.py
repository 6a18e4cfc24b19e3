"""The Typer CLI: help, version, plugins, config show, run's config errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import medxfer
from medxfer.cli import main
from tests.helpers import fake_medmnist, make_distribution, stop_run_pipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin-package"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m medxfer`` in a subprocess."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "medxfer", *args], capture_output=True,
                          text=True, env=full_env, timeout=300)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"medxfer {medxfer.__version__}"


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "plugins", "config"):
        assert command in out


def test_usage_errors_are_one_message_not_a_traceback(capsys):
    assert main(["run", "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --no-such-option" in err and "Traceback" not in err
    for command in ("pretrain", "compare", "ensemble"):
        assert main([command, "--help"]) == 0
    assert "--backbones" in capsys.readouterr().out


def test_plugins_json_has_the_required_keys(capsys):
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows, "no plugin registered"
    for row in rows:
        assert {"name", "kind", "distribution", "version"} <= set(row)
        assert row["kind"] in {"backbone", "strategy", "domain_adaptation", "combiner", "logger"}


def test_plugins_json_gives_each_backbones_capabilities(capsys):
    assert main(["plugins", "--json", "--kind", "backbone"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    lenet = rows["lenet"]["capabilities"]
    assert lenet["spatial_dims"] == [2, 3] and lenet["min_input_size"] == 12
    assert lenet["output"] == "features" and lenet["offline"] == {}
    assert rows["unet"]["capabilities"]["output"] == "segmentation"
    resnet = rows["resnet18"]["capabilities"]
    assert "imagenet" in resnet["pretrained"] and set(resnet["offline"]) == {"imagenet"}
    assert resnet["weights"]["imagenet"]["file_names"] == ["resnet18-f37072fd.pth"]


def test_plugins_table_has_a_capabilities_column(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert main(["plugins", "--kind", "backbone"]) == 0
    table = capsys.readouterr().out
    assert "capabilities" in table and "2D/3D, >=12 px, features" in table


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["plugins"], ["plugins", "--json"]])
def test_quick_commands_import_neither_torch_nor_monai(args):
    """``--help``, ``--version`` and ``plugins`` start fast: no plugin module imports torch."""
    code = ("import sys\nfrom medxfer.cli import main\ncode = main(%r)\n"
            "print('loaded', sorted(m for m in ('torch', 'monai') if m in sys.modules), code)"
            % (args,))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "loaded [] 0"


def test_plugins_table_keeps_whole_names_on_a_narrow_terminal(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["plugins", "--kind", "strategy"]) == 0
    table = capsys.readouterr().out
    assert "discriminative_lr" in table and "gradual_unfreeze" in table
    assert "feature_extraction" in table and "partial_finetune" in table


def test_plugins_unknown_kind_is_an_error(capsys):
    assert main(["plugins", "--kind", "foo"]) == 2
    assert "choose one of backbone, strategy" in capsys.readouterr().err


def test_config_show_prints_the_commented_default(capsys):
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# medxfer run config")
    assert "epochs: 5" in out


def test_config_show_checks_plugins_and_their_options(capsys):
    assert main(["config", "show", "--set", "strategy.name=partial_finetune",
                 "--set", "strategy.freeze_groups=-3"]) == 2
    assert "strategy.freeze_groups: must be >= 0" in capsys.readouterr().err
    assert main(["config", "show", "--set", "model.backbone.name=nosuch"]) == 2
    # a config for another machine (a GPU one) shows here
    assert main(["config", "show", "--set", "train.amp=fp16"]) == 0
    assert "amp: fp16" in capsys.readouterr().out


def test_run_rejects_bad_config_before_any_work(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epochs: three\n")
    out_dir = tmp_path / "out"
    assert main(["run", str(config), "--output", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "train.epochs" in err
    assert not out_dir.exists()


def test_run_rejects_unknown_plugin_with_choices(tmp_path, capsys):
    out_dir = tmp_path / "out"
    code = main(["run", "--set", "strategy.name=full_finetun", "--output", str(out_dir)])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "strategy.name: unknown strategy 'full_finetun'" in err
    assert "Available:" in err
    assert not out_dir.exists()


@pytest.mark.parametrize(("overrides", "message"), [
    (["strategy.name=partial_finetune", "strategy.freeze_groups=-3"],
     "strategy.freeze_groups: must be >= 0"),
    (["strategy.name=lwf", "strategy.temperature=-1"], "strategy.temperature: must be > 0"),
    (["domain_adaptation.name=mmd"], "'mmd' needs target-domain data"),
    (["train.early_stopping.metric=mae"],
     "train.early_stopping.metric: 'mae' is not a validation metric of this classification"),
    (["task=regression", "data.path=x.csv", "train.early_stopping.metric=auc"],
     "'auc' is not a validation metric of this regression run. Choose one of: loss, mae"),
    (["data.path=/nonexistent/data.npz"], "'/nonexistent/data.npz' does not exist"),
    (["model.backbone.name=resnet18"], "no ImageNet weights for backbone 'resnet18'"),
    (["model.backbone.name=unet"], "builds a segmentation network"),
    (["model.backbone.name=alexnet", "model.backbone.pretrained=none",
      "data.preprocess.image_size=[32,32]"],
     "'alexnet' needs inputs of at least 63 pixels per side, got 32x32"),
    (["data.augment.ops=[{name: flipp}]"], "unknown augmentation op 'flipp'"),
    (["data.augment.ops=[{name: flip, axes: [5]}]"], "axis 5 is not a spatial axis"),
    (["train.amp=fp16", "train.device=cpu"], "train.amp: fp16 needs a CUDA device"),
    (["eval.tta=flip", "eval.tta_axes=[5]"], "eval.tta_axes [5]: give distinct spatial axes"),
    (["data.split.file=/nonexistent/splits.csv"], "splits.csv"),
])
def test_run_check_finds_what_would_stop_the_run(overrides, message, tmp_path, capsys,
                                                 monkeypatch):
    """--check goes as far as the run gets before training: plugin options, target data,
    the monitored metric, the data and the weights."""
    monkeypatch.setenv("MEDXFER_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.chdir(tmp_path)
    args = [arg for item in overrides for arg in ("--set", item)]
    assert main(["run", "--check", *args]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert list(tmp_path.iterdir()) == []


def test_run_check_passes_a_good_config_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--check", "--set", "train.early_stopping.metric=val_f1"]) == 0
    assert "config, plugins, data and weights are valid" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


RANDOM_START = "starts from random weights"
TINY = ["--set", "model.backbone.name=basic_cnn", "--set", "model.backbone.channels=[4,8]",
        "--set", "data.augment.preset=none", "--set", "train.epochs=1",
        "--set", "train.batch_size=8", "--set", "eval.bootstrap=0"]


@pytest.mark.parametrize(("strategy", "warns"), [("feature_extraction", True),
                                                 ("full_finetune", False)])
def test_run_check_warns_of_a_strategy_that_keeps_random_starting_weights(
        strategy, warns, tmp_path, capsys, monkeypatch):
    """A head on a frozen random backbone is almost always a mistake: a warning, not an
    error; full_finetune from random weights is simply training from scratch."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--check", "--set", "model.backbone.name=basic_cnn",
                 "--set", "model.backbone.pretrained=none",
                 "--set", f"strategy.name={strategy}"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (f"warning: strategy '{strategy}' freezes or pulls towards" in err) is warns
    assert (RANDOM_START in err) is warns
    assert "config, plugins, data and weights are valid" in err


def test_run_check_does_not_warn_with_imagenet_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--check", "--set", "strategy.name=feature_extraction"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_on_a_frozen_random_backbone_warns_once_and_its_report_says_so(tmp_path, capsys):
    data = fake_medmnist(tmp_path / "fakemnist.npz")
    source = tmp_path / "source"
    assert main(["run", "--output", str(source), *TINY, "--set", f"data.path={data}",
                 "--set", "model.backbone.pretrained=none",
                 "--set", "strategy.name=feature_extraction"]) == 0
    assert capsys.readouterr().err.count(RANDOM_START) == 1
    assert json.loads((source / "metrics.json").read_text(encoding="utf-8"))["random_start"]
    report = " ".join((source / "report.md").read_text(encoding="utf-8").split())
    assert ("strategy feature_extraction froze or pulled towards the backbone's starting "
            "weights, which were random") in report
    # that run is a transfer source: the same strategy from it does not warn
    assert main(["run", "--check", *TINY, "--set", f"data.path={data}",
                 "--set", f"model.backbone.pretrained={source}",
                 "--set", "strategy.name=feature_extraction"]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["ensemble.members=2"],
                                   ["data.target.path=TARGET", "domain_adaptation.name=coral"]])
def test_ensemble_and_domain_adaptation_runs_warn_as_a_plain_run_does(extra, tmp_path, capsys):
    from medxfer.data.shift import parse_recipe, shift_medmnist

    data = fake_medmnist(tmp_path / "fakemnist.npz")
    target = shift_medmnist(data, tmp_path / "shifted.npz",
                            parse_recipe([{"name": "gamma", "gamma": 2.0}]))
    out_dir = tmp_path / "run"
    sets = [arg for item in extra for arg in ("--set", item.replace("TARGET", str(target)))]
    assert main(["run", "--output", str(out_dir), *TINY, "--set", f"data.path={data}",
                 "--set", "model.backbone.pretrained=none", "--set", "strategy.name=l2sp",
                 *sets]) == 0
    assert capsys.readouterr().err.count(RANDOM_START) == 1  # not once per member
    assert json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))["random_start"]


@pytest.mark.slow
def test_a_diverging_run_stops_with_a_clear_message(tmp_path, capsys):
    """A nan loss used to train on silently and crash in the threshold choice."""
    out_dir = tmp_path / "out"
    code = main(["run", "--output", str(out_dir), "--set", "model.backbone.name=basic_cnn",
                 "--set", "train.optimizer.lr=1e12", "--set", "train.epochs=2",
                 "--set", "eval.bootstrap=0"])
    assert code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "training diverged in epoch 1: the mean training loss is nan" in err
    assert "Lower train.optimizer.lr" in err and "Traceback" not in err
    assert not out_dir.exists()  # nothing to resume from: nothing left


def test_run_refuses_to_overwrite_results(tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "metrics.json").write_text("{}")
    assert main(["run", "--output", str(out_dir), "--set", "strategy.name=full_finetune"]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (out_dir / "metrics.json").read_text(encoding="utf-8") == "{}"


@pytest.mark.slow
def test_a_run_that_fails_before_its_first_checkpoint_leaves_nothing(tmp_path, capsys):
    """The same command can be run again once the cause is fixed: no --resume needed."""
    out_dir = tmp_path / "out"
    args = ["run", "--output", str(out_dir), "--set", "model.backbone.name=basic_cnn",
            "--set", "train.epochs=1", "--set", "eval.bootstrap=10", "--set", "data.limit=16"]
    missing = tmp_path / "missing.npz"
    assert main([*args, "--set", f"data.path={missing}"]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert not out_dir.exists()
    assert main(args) == 0
    assert (out_dir / "metrics.json").is_file()


def test_an_empty_output_folder_given_is_kept_but_emptied_after_a_failure(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    assert main(["run", "--output", str(out_dir), "--set", "model.backbone.name=basic_cnn",
                 "--set", f"data.path={tmp_path / 'missing.npz'}"]) == 2
    assert out_dir.is_dir() and not list(out_dir.iterdir())


def test_what_a_failed_run_can_resume_from_is_kept(tmp_path):
    from medxfer.workflows.run_folder import cleared_if_nothing_to_resume

    out_dir = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with cleared_if_nothing_to_resume(out_dir, resume=False):
            (out_dir / "members" / "m0" / "checkpoints").mkdir(parents=True)
            (out_dir / "members" / "m0" / "checkpoints" / "last.pt").write_bytes(b"x")
            raise RuntimeError("killed in the second member")
    assert (out_dir / "members" / "m0" / "checkpoints" / "last.pt").is_file()
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "config.yaml").write_text("{}")
    with pytest.raises(RuntimeError):
        with cleared_if_nothing_to_resume(resumed, resume=True):
            raise RuntimeError("failed again")
    assert (resumed / "config.yaml").is_file()


@pytest.mark.slow
def test_console_script_exit_code_for_a_bad_override(tmp_path):
    result = run_cli("run", "--set", "train.epochs=0", "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "train.epochs" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_broken_plugin_is_reported_and_cli_still_works(tmp_path):
    make_distribution(tmp_path, "bad-dist", "0.3", {"broken": "broken_plugin"},
                      {"broken_plugin": "raise ImportError('missing dependency xyz')\n"})
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = run_cli("plugins", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "'broken' from bad-dist 0.3" in result.stderr
    assert "missing dependency xyz" in result.stderr
    assert json.loads(result.stdout)
    strict = run_cli("plugins", "--json", env={**env, "MEDXFER_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2
    assert "'broken' from bad-dist 0.3" in strict.stderr


@pytest.mark.slow
def test_example_plugin_package_shows_in_plugins(tmp_path):
    """Register the example package through its entry-point metadata, as pip would."""
    import tomllib

    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    project = meta["project"]
    make_distribution(tmp_path, project["name"], project["version"],
                      project["entry-points"]["medxfer"])
    path = os.pathsep.join([str(tmp_path), str(EXAMPLE), os.environ.get("PYTHONPATH", "")])
    result = run_cli("plugins", "--json", env={"PYTHONPATH": path})
    assert result.returncode == 0, result.stderr
    rows = {(r["name"], r["kind"]): r for r in json.loads(result.stdout)}
    for key in (("tiny_cnn", "backbone"), ("freeze_first_group", "strategy")):
        assert rows[key]["distribution"] == "medxfer-example-plugin"
        assert rows[key]["version"] == "0.1.0"


# --- Ctrl-C ------------------------------------------------------------------------------

TINY = ["--set", "model.backbone.name=basic_cnn", "--set", "train.epochs=1"]


def _interrupted_pipeline(monkeypatch, write_checkpoint: bool) -> None:
    """``run``'s pipeline writes the run's first files (and a checkpoint) and gets Ctrl-C."""

    def ctrl_c():
        raise KeyboardInterrupt

    stop_run_pipeline(monkeypatch, write_checkpoint=write_checkpoint, stop=ctrl_c)


def test_ctrl_c_before_the_first_checkpoint_says_so_and_removes_the_run(tmp_path, capsys,
                                                                        monkeypatch):
    _interrupted_pipeline(monkeypatch, write_checkpoint=False)
    out_dir = tmp_path / "run"
    assert main(["run", "--output", str(out_dir), *TINY]) == 130
    err = capsys.readouterr().err
    assert "error: interrupted before the run saved a checkpoint" in err
    assert "run the same command again" in err and "Traceback" not in err
    assert not out_dir.exists()  # nothing to resume: the folder went


def test_ctrl_c_after_a_checkpoint_says_how_to_resume(tmp_path, capsys, monkeypatch):
    _interrupted_pipeline(monkeypatch, write_checkpoint=True)
    out_dir = tmp_path / "run"
    assert main(["run", "--output", str(out_dir), *TINY]) == 130
    err = " ".join(capsys.readouterr().err.split())  # rich may wrap a long path
    assert f"error: interrupted; continue the run with `medxfer run --resume --output " \
        f"{out_dir}`" in err
    assert (out_dir / "checkpoints" / "last.pt").is_file()


def test_ctrl_c_in_a_run_without_output_gives_a_general_hint(tmp_path, capsys, monkeypatch):
    _interrupted_pipeline(monkeypatch, write_checkpoint=True)
    monkeypatch.chdir(tmp_path)
    assert main(["run", *TINY]) == 130
    assert "`medxfer run --resume --output DIR`" in capsys.readouterr().err


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_in_any_command_exits_130_with_a_message(capsys, monkeypatch):
    from medxfer.cli import plugins_cmd

    monkeypatch.setattr(plugins_cmd, "plugin_rows", _interrupt)
    assert main(["plugins"]) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"


def test_ctrl_c_while_loading_plugins_exits_130_with_a_message(capsys, monkeypatch):
    import medxfer.cli.app as app

    monkeypatch.setattr(app, "create_plugin_manager", _interrupt)
    assert main(["plugins"]) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"
