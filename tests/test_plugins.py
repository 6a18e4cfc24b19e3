"""Plugin loading, registries, duplicates, suggestions, strict mode."""

from __future__ import annotations

import sys

import pytest

import medxfer
from medxfer.errors import ConfigError, PluginError
from medxfer.plugins import (
    KIND_HOOKS,
    PluginLoadWarning,
    build_registries,
    check_plugin_specs,
    create_plugin_manager,
)
from tests.helpers import make_distribution

GOOD = """
import medxfer

def factory(*, in_channels, spatial_dims, pretrained=None, width=4):
    return ("tiny", in_channels, spatial_dims, width)

@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("fake_net", factory, description="a fake backbone")
"""

BROKEN_IMPORT = "raise RuntimeError('boom at import')\n"

MISSPELT = """
import medxfer

@medxfer.hookimpl
def medxfer_register_backbone(register):  # missing the final s
    pass
"""

DUPLICATE = """
import medxfer

@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("fake_net", lambda **kw: None)
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path where tests install fake distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("good_plugin", "broken_plugin", "misspelt_plugin", "dup_plugin"):
        sys.modules.pop(name, None)


def test_fresh_manager_per_call_and_no_import_time_global():
    a = create_plugin_manager(load_entry_points=False)
    b = create_plugin_manager(load_entry_points=False)
    assert a.pm is not b.pm
    assert not a.pm.get_plugins()


def test_builtin_plugins_register_every_kind():
    registries = build_registries(create_plugin_manager(strict=True))
    assert len(registries.backbone) > 0
    assert len(registries.strategy) > 0
    for entry in registries.all_entries():
        assert entry.kind in KIND_HOOKS
        assert entry.distribution == "medxfer"
        assert entry.version == medxfer.__version__


def test_third_party_plugin_records_distribution(site):
    make_distribution(site, "fake-dist", "1.2.3", {"good": "good_plugin"}, {"good_plugin": GOOD})
    registries = build_registries(create_plugin_manager())
    entry = registries.backbone.get("fake_net")
    assert (entry.distribution, entry.version, entry.plugin) == ("fake-dist", "1.2.3", "good")
    assert entry.description == "a fake backbone"


def test_broken_import_is_reported_by_name_and_skipped(site):
    make_distribution(site, "bad-dist", "0.1", {"broken": "broken_plugin"},
                      {"broken_plugin": BROKEN_IMPORT})
    with pytest.warns(PluginLoadWarning, match=r"'broken' from bad-dist 0.1.*boom at import"):
        manager = create_plugin_manager()
    assert [b.plugin for b in manager.broken] == ["broken"]
    assert len(build_registries(manager).strategy) > 0  # the rest still works


def test_misspelt_hook_is_reported_and_skipped(site):
    make_distribution(site, "typo-dist", "2.0", {"typo": "misspelt_plugin"},
                      {"misspelt_plugin": MISSPELT})
    with pytest.warns(PluginLoadWarning, match=r"'typo'.*medxfer_register_backbone"):
        manager = create_plugin_manager()
    assert manager.broken[0].distribution == "typo-dist"
    assert not manager.pm.has_plugin("typo")


def test_strict_mode_makes_a_broken_plugin_fatal(site, monkeypatch):
    make_distribution(site, "bad-dist", "0.1", {"broken": "broken_plugin"},
                      {"broken_plugin": BROKEN_IMPORT})
    monkeypatch.setenv("MEDXFER_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"'broken' from bad-dist 0.1.*boom at import"):
        create_plugin_manager()


def test_duplicate_name_names_both_plugins(site):
    make_distribution(site, "fake-dist", "1.0", {"good": "good_plugin"}, {"good_plugin": GOOD})
    make_distribution(site, "dup-dist", "9.9", {"dup": "dup_plugin"}, {"dup_plugin": DUPLICATE})
    with pytest.raises(PluginError) as info:
        build_registries(create_plugin_manager())
    message = str(info.value)
    assert "'fake_net' is registered twice" in message
    assert "'good'" in message and "'dup'" in message
    assert "fake-dist" in message and "dup-dist" in message


def test_unknown_name_suggests_close_matches():
    registries = build_registries(create_plugin_manager())
    name = registries.strategy.names()[0]
    with pytest.raises(ConfigError) as info:
        registries.strategy.get(name[:-1] + "x", key="strategy.name")
    text = str(info.value)
    assert text.startswith("strategy.name: unknown strategy")
    assert "Did you mean" in text and name in text and "Available:" in text


def test_plugin_spec_options_are_checked_against_the_factory(site):
    from medxfer.config import PluginSpec

    make_distribution(site, "fake-dist", "1.0", {"good": "good_plugin"}, {"good_plugin": GOOD})
    registries = build_registries(create_plugin_manager())
    ok = {"model.backbone": ("backbone", PluginSpec(name="fake_net", width=8))}
    check_plugin_specs(ok, registries)
    bad = {"model.backbone": ("backbone", PluginSpec(name="fake_net", widht=8))}
    with pytest.raises(ConfigError, match=r"model.backbone.widht.*Did you mean 'width'"):
        check_plugin_specs(bad, registries)
    core = {"model.backbone": ("backbone", PluginSpec(name="fake_net", in_channels=3))}
    with pytest.raises(ConfigError, match="set by medxfer itself"):
        check_plugin_specs(core, registries)


def test_manual_registration_and_unregistration():
    class Local:
        @medxfer.hookimpl
        def medxfer_register_combiners(self, register):
            register("local_mean", lambda: None)

    manager = create_plugin_manager(load_entry_points=False)
    plugin = Local()
    manager.register(plugin, name="local")
    assert build_registries(manager).combiner.names() == ["local_mean"]
    manager.unregister(plugin)
    assert len(build_registries(manager).combiner) == 0


def test_register_misspelt_hook_on_object_fails_with_name():
    class Typo:
        @medxfer.hookimpl
        def medxfer_fit_strat(self, ctx):
            pass

    manager = create_plugin_manager(load_entry_points=False)
    with pytest.raises(PluginError, match="'typo'.*does not define"):
        manager.register(Typo(), name="typo")
