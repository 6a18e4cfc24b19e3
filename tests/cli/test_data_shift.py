"""``medxfer data shift``: a shifted copy from a recipe or --op, --list, clear errors."""

from __future__ import annotations

import numpy as np
import typer
from typer.testing import CliRunner

from medxfer.cli import data_cmd


def _app() -> typer.Typer:
    app = typer.Typer()
    data_cmd.register(app)

    @app.callback()
    def _root() -> None:
        """medxfer (test)."""

    return app


def _npz(path):
    rng = np.random.default_rng(0)
    np.savez(path, **{f"{s}_images": rng.integers(0, 255, (4, 8, 8)).astype(np.uint8)
                      for s in ("train", "val", "test")},
             **{f"{s}_labels": np.array([0, 1, 0, 1]) for s in ("train", "val", "test")})
    return path


def test_shift_with_ops_and_recipe(tmp_path, repo_root):
    source = _npz(tmp_path / "tinymnist.npz")
    runner = CliRunner()
    result = runner.invoke(_app(), ["data", "shift", str(source), "--op", "gamma:gamma=2",
                                    "--op", "blur", "--output", str(tmp_path / "a.npz")])
    assert result.exit_code == 0, result.output
    assert "gamma, blur" in result.output and (tmp_path / "a.npz").is_file()
    recipe = repo_root / "configs" / "shifts" / "scanner_b.yaml"
    result = runner.invoke(_app(), ["data", "shift", str(source), "--recipe", str(recipe),
                                    "--output", str(tmp_path / "b.npz")])
    assert result.exit_code == 0, result.output


def test_list_and_errors(tmp_path):
    runner = CliRunner()
    listed = runner.invoke(_app(), ["data", "shift", "--list"])
    assert listed.exit_code == 0 and "bias_field" in listed.output
    source = _npz(tmp_path / "tinymnist.npz")
    bad = runner.invoke(_app(), ["data", "shift", str(source), "--op", "gama",
                                 "--output", str(tmp_path / "c.npz")])
    assert bad.exit_code != 0 and "did you mean 'gamma'" in str(bad.exception)


def test_a_resolution_factor_larger_than_the_images_is_refused(tmp_path):
    source = _npz(tmp_path / "tinymnist.npz")
    bad = CliRunner().invoke(_app(), ["data", "shift", str(source), "--op",
                                      "resolution:factor=16", "--output", str(tmp_path / "d.npz")])
    assert bad.exit_code != 0
    assert str(bad.exception) == (
        "corruption 0 (resolution): factor 16 downsamples the 8x8 images to 1x1, fewer than "
        "2 pixels along an axis, and would make them flat; use a smaller factor (4 leaves 2)")
    assert not (tmp_path / "d.npz").exists()
