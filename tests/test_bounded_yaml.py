"""YAML within bounds: alias bombs, huge and deeply nested documents are refused at once
with one ConfigError; ordinary documents load as ``yaml.safe_load`` loads them."""

from __future__ import annotations

import time

import pytest
import yaml

from medxfer.bounded_yaml import MAX_DEPTH, MAX_VALUES, describe_yaml_error, load_yaml
from medxfer.config import load_config, parse_override
from medxfer.errors import ConfigError

#: The "billion laughs": nine levels of nine aliases, a few hundred bytes for 9**9 strings
#: (the issue's 541-byte bomb grew to 3.9 GB and aborted after 85 s).
ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{key}: &{key} [{','.join([f'*{prev}'] * 9)}]"
       for prev, key in zip("abcdefgh", "bcdefghi")]) + "\n"


def test_the_alias_bomb_is_small():
    assert len(ALIAS_BOMB.encode()) < 600


def test_an_ordinary_document_loads_as_safe_load_does():
    text = "base: &b {lr: 0.1, epochs: [1, 2]}\nrun: {<<: *b, epochs: 3}\nlist: [*b, *b]\n"
    assert load_yaml(text, "x") == yaml.safe_load(text)
    assert load_yaml("", "x") is None


@pytest.mark.parametrize("text, problem", [
    (ALIAS_BOMB, f"expands to more than {MAX_VALUES} values"),
    ("a: &a [1, *a]\n", "refers to a section that contains it"),
    ("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n",
     f"nests more than {MAX_DEPTH} levels deep"),
])
def test_documents_past_the_bounds_are_refused_at_once(text, problem):
    tic = time.perf_counter()
    with pytest.raises(ConfigError, match=problem):
        load_yaml(text, "config file 'x.yaml'")
    assert time.perf_counter() - tic < 0.5


def test_nesting_past_the_parser_s_own_limit_is_a_config_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="(nest|levels)"):
        load_config(path)


def test_the_alias_bomb_in_a_config_file_is_refused_at_once(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    tic = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"config file '{path}' expands to more than"):
        load_config(path)
    assert time.perf_counter() - tic < 0.5


def test_a_big_config_file_is_refused_by_size_unread(tmp_path):
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:  # 50 MB, sparse: refused before a byte is read
        handle.truncate(50 * 2**20)
    tic = time.perf_counter()
    with pytest.raises(ConfigError, match=rf"'{path}' is larger than 256 KiB"):
        load_config(path)
    assert time.perf_counter() - tic < 0.5


def test_an_alias_bomb_given_with_set_is_refused():
    bomb = "{" + ALIAS_BOMB.strip().replace("\n", ", ") + "}"
    with pytest.raises(ConfigError, match="the value of --set data.classes expands to more"):
        load_config(None, [f"data.classes={bomb}"])
    with pytest.raises(ConfigError, match=f"more than {MAX_DEPTH} parts"):
        parse_override("a" + ".a" * MAX_DEPTH + "=1")


def test_yaml_errors_say_where_without_quoting_the_file(tmp_path):
    path = tmp_path / "secret.yaml"
    path.write_text("token: s3cr3t-value\n  nested: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"config file '{path}' is not valid YAML" in message and "line 2" in message
    assert "s3cr3t" not in message
    path.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid YAML: it is not UTF-8 text"):
        load_config(path)


def test_describe_yaml_error_names_reader_errors_by_position():
    with pytest.raises(yaml.YAMLError) as info:
        load_yaml("a: \x00", "x")
    assert describe_yaml_error(info.value).endswith("(character 4)")


def test_a_validation_message_quotes_values_briefly_and_counts_the_rest(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  classes: [" + ", ".join(["[1]"] * 100) + "]\n"
                    "model:\n  backbone: {name: [" + ", ".join(["x" * 50] * 100) + "]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "... and 81 more" in message
    assert len(message) < 4000
