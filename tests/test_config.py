"""Run config: validation messages, overrides, resolved output, commented default."""

from __future__ import annotations

import pytest
import yaml

from medxfer.config import (
    RunConfig,
    apply_overrides,
    commented_default_config,
    config_to_yaml,
    load_config,
    parse_override,
    write_resolved_config,
)
from medxfer.errors import ConfigError


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_validate():
    config = load_config()
    assert config.task == "classification"
    assert config.model.backbone.name == "mobilenet_v2"
    assert config.model.backbone.kwargs == {"pretrained": "imagenet"}


def test_unknown_key_names_the_key_and_the_allowed_keys(tmp_path):
    path = write(tmp_path, "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "train.epochz: unknown key" in text
    assert "epochs" in text and str(path) in text


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train.batch_size: .*integer.*'many'"):
        load_config(write(tmp_path, "train:\n  batch_size: many\n"))


def test_bad_choice_lists_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"train.optimizer.name: .*'adamw' or 'sgd'"):
        load_config(write(tmp_path, "train:\n  optimizer: {name: adam}\n"))


def test_plugin_spec_keeps_extra_options(tmp_path):
    config = load_config(write(tmp_path, "strategy: {name: partial_finetune, freeze_groups: 3}\n"))
    assert config.strategy.name == "partial_finetune"
    assert config.strategy.kwargs == {"freeze_groups": 3}


def test_plugin_spec_requires_a_name(tmp_path):
    with pytest.raises(ConfigError, match=r"strategy.name: Field required"):
        load_config(write(tmp_path, "strategy: {freeze_groups: 3}\n"))


def test_overrides_parse_yaml_values_and_nest():
    assert parse_override("train.epochs=3") == (["train", "epochs"], 3)
    assert parse_override("data.preprocess.image_size=[64, 64]")[1] == [64, 64]
    assert parse_override("domain_adaptation=null")[1] is None
    raw = apply_overrides({"train": {"epochs": 1}}, ["train.epochs=7", "strategy.name=l2sp"])
    assert raw == {"train": {"epochs": 7}, "strategy": {"name": "l2sp"}}


def test_override_errors_are_clear():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("train.epochs")
    with pytest.raises(ConfigError, match="train.epochs is a value, not a section"):
        apply_overrides({"train": {"epochs": 1}}, ["train.epochs.x=1"])


def test_overrides_are_validated(tmp_path):
    with pytest.raises(ConfigError, match=r"train.epochs: .*greater than or equal to 1"):
        load_config(None, ["train.epochs=0"])


def test_errors_from_overrides_name_the_override(tmp_path):
    """A bad ``--set`` is not reported as if it were a line of the config file."""
    path = write(tmp_path, "train:\n  epochz: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.batch_size=many", "model.head={x: 1}", "train.epochs=2"])
    lines = str(info.value).splitlines()
    assert lines[0] == f"invalid config ({path}):"
    by_key = {line.split(":")[0].strip(): line for line in lines[1:]}
    assert "unknown key" in by_key["train.epochz"] and "--set" not in by_key["train.epochz"]
    assert by_key["train.batch_size"].endswith("[from --set train.batch_size=many]")
    assert by_key["model.head.x"].endswith("[from --set model.head={x: 1}]")


def test_head_hidden_takes_one_width_or_a_list():
    assert load_config(None, ["model.head.hidden=64"]).model.head.hidden == 64
    assert load_config(None, ["model.head.hidden=[120, 84]"]).model.head.hidden == [120, 84]
    with pytest.raises(ConfigError, match=r"model.head.hidden"):
        load_config(None, ["model.head.hidden=[120, 0]"])
    with pytest.raises(ConfigError, match=r"model.head.hidden"):
        load_config(None, ["model.head.hidden=true"])  # not a width of 1


def test_classification_options_on_a_regression_run_are_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(None, ["task=regression", "loss.label_smoothing=0.1",
                           "train.imbalance=class_weights", "eval.threshold=val_f1",
                           "loss.name=dice", "data.classes=[a, b]"])
    text = str(info.value)
    for key in ("loss.name 'dice'", "loss.label_smoothing", "train.imbalance 'class_weights'",
                "data.classes", "eval.threshold"):
        assert key in text
    assert "[from --set" not in text  # a check across sections names no single override
    # a regression run's resolved config (every default spelt out) loads again
    config = load_config(None, ["task=regression"])
    assert load_config(write_resolved_config(config, tmp_path)).task == "regression"


def test_yaml_is_never_evaluated(tmp_path):
    path = write(tmp_path, "task: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder; give the YAML file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_relative_data_path_is_relative_to_the_config(tmp_path):
    config = load_config(write(tmp_path, "data: {path: images}\n"))
    assert config.data.path == str(tmp_path / "images")


def test_a_relative_path_given_with_set_is_relative_to_the_current_folder(tmp_path,
                                                                         monkeypatch):
    """As any command-line path, whether or not a config file is given (the file's own
    relative paths stay relative to the file)."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "work").mkdir()
    path = tmp_path / "configs" / "run.yaml"
    path.write_text("data: {path: images, split: {file: splits.csv}, "
                    "target: {path: target.csv}}\n")
    monkeypatch.chdir(tmp_path / "work")
    config = load_config(path, ["data.path=mine.npz", "data.target={path: t/other.csv}"])
    assert config.data.path == str(tmp_path / "work" / "mine.npz")
    assert config.data.target.path == str(tmp_path / "work" / "t" / "other.csv")
    assert config.data.split.file == str(tmp_path / "configs" / "splits.csv")
    assert load_config(None, ["data.path=mine.npz"]).data.path == \
        str(tmp_path / "work" / "mine.npz")
    assert load_config(path, ["data.path=/abs/x.npz"]).data.path == "/abs/x.npz"
    assert load_config(path, ["data.path=../work/./mine.npz"]).data.path == \
        str(tmp_path / "work" / "mine.npz")  # one spelling per file, so a resume matches


def test_resolved_config_round_trips(tmp_path):
    config = load_config(None, ["train.epochs=2", "strategy.name=l2sp", "strategy.beta2=1"])
    path = write_resolved_config(config, tmp_path / "run")
    again = load_config(path)
    assert config_to_yaml(again) == config_to_yaml(config)


def test_commented_default_is_valid_yaml_equal_to_the_defaults():
    text = commented_default_config()
    assert "# number of epochs" in text
    assert RunConfig.model_validate(yaml.safe_load(text)) == RunConfig()


def test_fold_needs_folds():
    """A fold beyond data.split.folds is refused here; a fold without folds picks a fold
    the data stores (a MONAI datalist's fold keys), so the data loading refuses it for data
    that stores none."""
    from medxfer.data.run_cases import load_datalist, split_datalist
    from medxfer.errors import DataError

    with pytest.raises(ConfigError, match="data.split.fold needs data.split.folds"):
        load_config(None, ["data.split.fold=2", "data.split.folds=2"])
    config = load_config(None, ["data.split.fold=1"])
    with pytest.raises(DataError, match=r"data.split.fold 1 picks a fold, but .* stores none"):
        split_datalist(load_datalist(config), config)


def test_override_into_a_default_plugin_spec_keeps_its_name():
    config = load_config(None, ["model.backbone.pretrained=none"])
    assert config.model.backbone.name == "mobilenet_v2"
    assert config.model.backbone.kwargs == {"pretrained": "none"}


def test_renaming_a_default_plugin_drops_the_old_plugins_options():
    config = load_config(None, ["model.backbone.name=basic_cnn"])
    assert config.model.backbone.kwargs == {}
    config = load_config(None, ["model.backbone.pretrained=none", "model.backbone.name=resnet18"])
    assert config.model.backbone.kwargs == {"pretrained": "none"}


def test_renaming_a_plugin_set_in_the_file_keeps_the_files_options(tmp_path):
    path = write(tmp_path, "model:\n  backbone: {name: resnet18, pretrained: none}\n")
    config = load_config(path, ["model.backbone.name=resnet50"])
    assert config.model.backbone.kwargs == {"pretrained": "none"}


def test_a_bare_off_for_train_amp_means_off(tmp_path):
    # YAML reads a bare ``off`` as false, in a file and in --set alike
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    assert load_config(write(tmp_path, "train:\n  amp: off\n")).train.amp == "off"
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(None, ["train.amp=true"])


def test_train_compile_true_in_a_file_stays_torch_compile(tmp_path):
    config = load_config(write(tmp_path, "train:\n  compile: true\n"))
    assert config.train.compile is True
    assert yaml.safe_load(config_to_yaml(config))["train"]["compile"] is True  # saved as given


def test_ddp_gradient_sync_options_are_validated(tmp_path):
    ddp = load_config().train.ddp
    assert (ddp.bucket_cap_mb, ddp.static_graph) == (25.0, False)
    ddp = load_config(None, ["train.ddp={bucket_cap_mb: 1.5, gradient_as_bucket_view: true, "
                             "static_graph: true}"]).train.ddp
    assert (ddp.bucket_cap_mb, ddp.gradient_as_bucket_view, ddp.static_graph) == \
        (1.5, True, True)
    with pytest.raises(ConfigError, match=r"train.ddp.bucket_cap_mb: .*greater than 0"):
        load_config(write(tmp_path, "train:\n  ddp: {bucket_cap_mb: 0}\n"))
    with pytest.raises(ConfigError, match=r"train.ddp.static_graf: unknown key"):
        load_config(write(tmp_path, "train:\n  ddp: {static_graf: true}\n"))
    with pytest.raises(ConfigError, match=r"train.ddp.gradient_as_bucket_view: .*boolean"):
        load_config(write(tmp_path, "train:\n  ddp: {gradient_as_bucket_view: sometimes}\n"))
