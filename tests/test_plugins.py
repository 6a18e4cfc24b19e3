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

TAKES_BUILTIN = """
import medxfer

@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("other_net", lambda **kw: None)
    register("mobilenet_v2", lambda **kw: None)
"""

RAISES = """
import medxfer

@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("half_net", lambda **kw: None)

@medxfer.hookimpl
def medxfer_register_strategies(register):
    raise RuntimeError("no luck")
"""

FAULTY_FACTORIES = """
import medxfer

def returns_none(*, in_channels, spatial_dims, pretrained=None):
    return None

def raises(*, in_channels, spatial_dims, pretrained=None):
    raise KeyError("weights_dict")

@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("none_net", returns_none)
    register("raising_net", raises)
"""

WITH_CAPABILITIES = """
import medxfer

def flat(*, in_channels, spatial_dims, pretrained=None):
    return ("flat", spatial_dims)

def seg(*, in_channels, spatial_dims, num_classes, pretrained=None):
    return ("seg", spatial_dims)

@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("flat_net", flat, capabilities={"spatial_dims": (2,), "min_input_size": 16})
    register("seg_net", seg, capabilities=medxfer.BackboneCapabilities(spatial_dims=(3,)))
"""

BAD_CAPABILITIES = {
    "invalid": """
import medxfer

@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("odd_net", lambda **kw: None, capabilities={"spatial_dims": (4,)})
""",
    "contradicted": """
import medxfer

def flat(*, in_channels, spatial_dims, pretrained=None):
    return None

@medxfer.hookimpl
def medxfer_register_backbones(register):
    register("odd_net", flat, capabilities={"output": "segmentation"})
""",
    "not_a_backbone": """
import medxfer

@medxfer.hookimpl
def medxfer_register_strategies(register):
    register("odd_strategy", lambda: None, capabilities={"spatial_dims": (2,)})
""",
}


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path where tests install fake distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("good_plugin", "broken_plugin", "misspelt_plugin", "dup_plugin",
                 "taker_plugin", "raising_plugin", "faulty_plugin", "caps_plugin",
                 "odd_plugin"):
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


def test_duplicate_name_names_both_plugins_and_skips_the_later(site, monkeypatch):
    make_distribution(site, "fake-dist", "1.0", {"good": "good_plugin"}, {"good_plugin": GOOD})
    make_distribution(site, "dup-dist", "9.9", {"dup": "dup_plugin"}, {"dup_plugin": DUPLICATE})
    manager = create_plugin_manager()
    with pytest.warns(PluginLoadWarning) as caught:
        registries = build_registries(manager)
    message = " ".join(str(w.message) for w in caught)
    assert "'fake_net' is registered twice" in message
    assert "'good'" in message and "'dup'" in message
    assert "fake-dist" in message and "dup-dist" in message
    skipped = [b.plugin for b in manager.broken]
    kept = registries.backbone.get("fake_net").plugin
    assert sorted([skipped[0], kept]) == ["dup", "good"]  # one of them, by load order
    monkeypatch.setenv("MEDXFER_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="'fake_net' is registered twice"):
        build_registries(create_plugin_manager())


def test_a_plugin_cannot_take_a_builtin_name(site):
    """medxfer's own plugins register first: the installed one is skipped, not the built-in."""
    make_distribution(site, "taker-dist", "1.0", {"taker": "taker_plugin"},
                      {"taker_plugin": TAKES_BUILTIN})
    manager = create_plugin_manager()
    with pytest.warns(PluginLoadWarning, match=r"'mobilenet_v2' is registered twice.*"
                                               r"taker-dist"):
        registries = build_registries(manager)
    assert registries.backbone.get("mobilenet_v2").distribution == "medxfer"
    assert "other_net" not in registries.backbone  # the plugin is skipped as a whole
    assert [b.plugin for b in manager.broken] == ["taker"]


def test_a_plugin_whose_registration_raises_is_skipped(site, monkeypatch):
    make_distribution(site, "fake-dist", "1.0", {"good": "good_plugin"}, {"good_plugin": GOOD})
    make_distribution(site, "raise-dist", "0.1", {"raiser": "raising_plugin"},
                      {"raising_plugin": RAISES})
    manager = create_plugin_manager()
    with pytest.warns(PluginLoadWarning, match=r"'raiser' from raise-dist 0.1.*"
                                               r"medxfer_register_strategies raised "
                                               r"RuntimeError: no luck"):
        registries = build_registries(manager)
    assert "fake_net" in registries.backbone and "half_net" not in registries.backbone
    assert len(registries.strategy) > 0
    monkeypatch.setenv("MEDXFER_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="no luck"):
        build_registries(create_plugin_manager())


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


@pytest.mark.parametrize(("backbone", "message"), [
    ("none_net", r"'none_net' of plugin 'faulty' \(faulty-dist 0.3\) returned NoneType, not "
                 r"a medxfer.models.Backbone"),
    ("raising_net", r"backbone 'raising_net' of plugin 'faulty' \(faulty-dist 0.3\) failed: "
                    r"KeyError: 'weights_dict'. This is an error in that plugin"),
])
def test_a_faulty_backbone_factory_is_named(site, backbone, message):
    from types import SimpleNamespace

    from medxfer.config import load_config
    from medxfer.tasks import task_of

    make_distribution(site, "faulty-dist", "0.3", {"faulty": "faulty_plugin"},
                      {"faulty_plugin": FAULTY_FACTORIES})
    registries = build_registries(create_plugin_manager())
    config = load_config(None, [f"model.backbone.name={backbone}"])
    shape = SimpleNamespace(spatial_dims=2, in_channels=1, num_classes=2)
    with pytest.raises(PluginError, match=message):
        task_of(config).build_network(config, registries, shape, {})


def test_capabilities_are_recorded_with_the_output_kind_from_the_factory(site):
    make_distribution(site, "caps-dist", "1.0", {"caps": "caps_plugin"},
                      {"caps_plugin": WITH_CAPABILITIES})
    registries = build_registries(create_plugin_manager(strict=True))
    flat, seg = registries.backbone.get("flat_net"), registries.backbone.get("seg_net")
    assert (flat.capabilities.spatial_dims, flat.capabilities.min_input_size) == ((2,), 16)
    assert flat.capabilities.output == "features" and seg.capabilities.output == "segmentation"
    assert registries.backbone.create("flat_net", in_channels=1, spatial_dims=2) == ("flat", 2)
    with pytest.raises(ConfigError) as info:
        registries.backbone.create("flat_net", key="model.backbone", in_channels=1,
                                   spatial_dims=3)
    message = str(info.value)
    assert message.startswith("model.backbone: backbone 'flat_net' only builds 2D networks, "
                              "but the data is 3D. For 3D images use one of: ")
    suggested = message.split("use one of: ")[1].rstrip(".").split(", ")
    assert "resnet18_3d" in suggested and not {"seg_net", "flat_net"} & set(suggested)


@pytest.mark.parametrize(("case", "message"), [
    ("invalid", r"'odd' registered backbone 'odd_net' with invalid capabilities: "
                r"spatial_dims must be 2 and/or 3"),
    ("contradicted", r"'odd_net' with output 'segmentation', but its factory does not take "
                     r"num_classes"),
    ("not_a_backbone", r"'odd' registered strategy 'odd_strategy' with capabilities; only "
                       r"backbones declare them"),
])
def test_wrong_capabilities_skip_the_plugin_by_name(site, case, message):
    make_distribution(site, "odd-dist", "0.2", {"odd": "odd_plugin"},
                      {"odd_plugin": BAD_CAPABILITIES[case]})
    manager = create_plugin_manager()
    with pytest.warns(PluginLoadWarning, match=message):
        registries = build_registries(manager)
    assert [b.plugin for b in manager.broken] == ["odd"]
    assert len(registries.backbone) > 0
