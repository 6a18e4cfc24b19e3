"""The optional attributes of plugin objects: defaults, type checks, Protocols."""

from __future__ import annotations

import pytest

import medxfer
from medxfer.errors import PluginError
from medxfer.plugin_kit import attributes as A


class Bare:
    """A plugin object that declares nothing."""


class Declares:
    name = "declares"
    uses_pretrained = False
    freezes_backbone = True
    keeps_pretrained = True
    changes_trainable_parameters = True
    draws_target_batches = False
    supports_spatial = False

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def describe(self) -> dict:
        return {"name": self.name}

    def restore_structure(self, model) -> None:
        self.calls.append(("restore", model))

    def fit(self, val_outputs, val_targets, member_scores) -> None:
        self.calls.append(("fit", val_outputs, val_targets, member_scores))


@pytest.mark.parametrize("name", sorted(A.OPTIONAL_FLAGS))
def test_a_missing_flag_has_its_documented_default_and_a_set_one_wins(name):
    flag = A.OPTIONAL_FLAGS[name]
    accessor = getattr(A, name)
    assert accessor(Bare()) is flag.default
    assert A.plugin_flag(Bare(), name) is flag.default
    assert accessor(Declares()) is (not flag.default)
    assert isinstance(Declares(), flag.protocol) and not isinstance(Bare(), flag.protocol)


def test_a_flag_that_is_not_a_bool_names_the_plugin():
    odd = Declares()
    odd.uses_pretrained = "no"
    with pytest.raises(PluginError, match=r"'declares' sets uses_pretrained = 'no'; it must be "
                                          r"True or False"):
        A.uses_pretrained(odd)
    with pytest.raises(KeyError):
        A.plugin_flag(Bare(), "no_such_flag")


def test_describe_restore_and_fit_are_called_only_when_present():
    plugin = Declares()
    assert A.describe_plugin(plugin) == {"name": "declares"}
    assert A.describe_plugin(Bare()) is None
    assert A.restore_network_structure(plugin, "model") is True
    assert A.restore_network_structure(Bare(), "model") is False
    assert A.fit_on_validation(plugin, "out", "y", [0.5]) is True
    assert A.fit_on_validation(Bare(), "out", "y", [0.5]) is False
    assert plugin.calls == [("restore", "model"), ("fit", "out", "y", [0.5])]
    assert isinstance(plugin, A.Describes) and isinstance(plugin, A.RestoresStructure)
    assert isinstance(plugin, A.FitsOnValidation) and not isinstance(Bare(), A.Describes)


def test_describe_must_return_a_dict():
    class Odd:
        def describe(self):
            return "odd"

    with pytest.raises(PluginError, match="describe\\(\\) returned str, not a dict"):
        A.describe_plugin(Odd())


def test_the_bases_declare_the_defaults():
    assert A.uses_pretrained(medxfer.Strategy()) is True
    assert A.keeps_pretrained(medxfer.Strategy()) is False
    assert A.changes_trainable_parameters(medxfer.Strategy()) is False
    assert A.draws_target_batches(medxfer.DomainAdaptation()) is True
    assert A.supports_spatial(medxfer.Combiner()) is True
    assert A.describe_plugin(medxfer.Strategy(lr=0.1)) == {"name": "", "lr": 0.1}
