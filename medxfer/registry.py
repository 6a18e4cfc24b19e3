"""One registry per plugin kind: named factories, with the plugin that registered each.

:func:`medxfer.plugins.build_registries` fills them; commands look plugins up here by the
names a config gives, with "did you mean" suggestions, and check the options a config
passes against each factory's signature. A backbone entry may carry its
:class:`~medxfer.plugin_kit.capabilities.BackboneCapabilities`, which the registry uses to
refuse a dimensionality before building and to name the backbones that fit instead.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from medxfer.errors import ConfigError, MedxferError, PluginError
from medxfer.plugin_kit.capabilities import BackboneCapabilities

#: The distribution of medxfer's own plugins, which register before any other.
BUILTIN = "medxfer"

#: Plugin kinds, each with the registration hook that fills its registry.
KIND_HOOKS: dict[str, str] = {
    "backbone": "medxfer_register_backbones",
    "strategy": "medxfer_register_strategies",
    "domain_adaptation": "medxfer_register_domain_adaptation",
    "combiner": "medxfer_register_combiners",
    "logger": "medxfer_register_loggers",
}


@dataclass(frozen=True)
class RegistryEntry:
    """One registered factory and the plugin that registered it."""

    name: str
    kind: str
    factory: Callable[..., Any]
    plugin: str
    distribution: str
    version: str
    description: str = ""
    capabilities: BackboneCapabilities | None = None


class Registry:
    """Named factories of one plugin kind, with duplicate detection and suggestions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry] = {}

    def add(self, entry: RegistryEntry) -> None:
        """Add an entry; a name registered twice is an error naming both plugins."""
        if entry.name in self._entries:
            first = self._entries[entry.name]
            raise PluginError(
                f"{self.kind} {entry.name!r} is registered twice: by plugin {first.plugin!r} "
                f"({first.distribution} {first.version}) and by plugin {entry.plugin!r} "
                f"({entry.distribution} {entry.version}); uninstall or rename one of them"
            )
        self._entries[entry.name] = entry

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def entries(self) -> list[RegistryEntry]:
        """Registered entries, sorted by name."""
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, *, key: str | None = None) -> RegistryEntry:
        """Look up ``name``.

        Args:
            name: The registered name.
            key: The config key the name came from, for the error message.

        Raises:
            ConfigError: for an unknown name, with "did you mean" and the choices.
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(unknown_name_message(self.kind, name, self.names(), key)) from None

    def create(self, name: str, *, key: str | None = None, **kwargs: Any) -> Any:
        """Call the factory registered as ``name`` with ``kwargs`` (checked first).

        Raises:
            ConfigError: for an unknown name or option, or a ``spatial_dims`` the entry's
                capabilities leave out (naming the entries that build it).
            PluginError: when an installed (not built-in) plugin's factory fails with
                anything but a medxfer error, naming the plugin and its distribution.
        """
        entry = self.get(name, key=key)
        check_factory_kwargs(entry, kwargs, key=key)
        self._check_spatial_dims(entry, kwargs.get("spatial_dims"), key)
        try:
            return entry.factory(**kwargs)
        except MedxferError:
            raise
        except Exception as exc:
            if entry.distribution == BUILTIN:
                raise
            raise PluginError(
                f"{self.kind} {name!r} of plugin {entry.plugin!r} ({entry.distribution} "
                f"{entry.version}) failed: {type(exc).__name__}: {exc}. This is an error in "
                "that plugin; report it to its authors, or choose another "
                f"{key or self.kind}") from exc

    def builders_of(self, spatial_dims: int, output: str | None = None) -> list[str]:
        """Names of the entries whose capabilities include ``spatial_dims`` (and ``output``)."""
        return [e.name for e in self.entries() if e.capabilities is not None
                and e.capabilities.builds(spatial_dims)
                and (output is None or e.capabilities.output == output)]

    def _check_spatial_dims(self, entry: RegistryEntry, spatial_dims: Any,
                            key: str | None) -> None:
        caps = entry.capabilities
        if caps is None or not isinstance(spatial_dims, int) or caps.builds(spatial_dims):
            return
        dims = " or ".join(f"{d}D" for d in caps.spatial_dims)
        others = self.builders_of(spatial_dims, caps.output)
        hint = (f" For {spatial_dims}D images use one of: {', '.join(others)}." if others
                else f" No registered {self.kind} builds {spatial_dims}D networks.")
        raise ConfigError(f"{key or self.kind}: {self.kind} {entry.name!r} only builds {dims} "
                          f"networks, but the data is {spatial_dims}D.{hint}")


def unknown_name_message(kind: str, name: str, choices: list[str], key: str | None) -> str:
    """Message for an unknown plugin name, with close matches and every choice."""
    where = f"{key}: " if key else ""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(choices) if choices else "(none registered)"
    return f"{where}unknown {kind} {name!r}.{hint} Available: {listed}."


def check_factory_kwargs(entry: RegistryEntry, kwargs: dict[str, Any], *,
                         key: str | None = None, provided: Iterable[str] = ()) -> None:
    """Check that ``kwargs`` (plus names the core passes, ``provided``) fit the factory.

    Raises:
        ConfigError: naming the unknown key and the keys the plugin accepts.
    """
    try:
        sig = inspect.signature(entry.factory)
    except (TypeError, ValueError):
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in provided]
    for arg in kwargs:
        if arg not in params:
            where = f"{key}.{arg}" if key else arg
            close = difflib.get_close_matches(arg, accepted, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"{where}: {entry.kind} {entry.name!r} takes no option {arg!r}.{hint} "
                f"Accepted: {', '.join(accepted) or '(none)'}."
            )


@dataclass
class Registries:
    """One registry per plugin kind."""

    backbone: Registry
    strategy: Registry
    domain_adaptation: Registry
    combiner: Registry
    logger: Registry

    def of(self, kind: str) -> Registry:
        """The registry of ``kind`` (one of :data:`KIND_HOOKS`)."""
        if kind not in KIND_HOOKS:
            raise ValueError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KIND_HOOKS)}")
        return getattr(self, kind)

    def all_entries(self) -> list[RegistryEntry]:
        """Every entry of every kind."""
        return [e for kind in KIND_HOOKS for e in self.of(kind).entries()]



#: Keyword arguments the core itself passes to factories of each kind.
CORE_PROVIDED_KWARGS: dict[str, tuple[str, ...]] = {
    "backbone": ("in_channels", "spatial_dims", "num_classes"),
    "strategy": (),
    "domain_adaptation": (),
    "combiner": (),
    "logger": (),
}


def check_plugin_specs(specs: dict[str, tuple[str, Any]], registries: Registries) -> None:
    """Check every ``{name, **kwargs}`` spec of a config against the registries.

    Args:
        specs: Config key -> (kind, spec) as from ``RunConfig.plugin_specs()``.
        registries: The registries to check against.

    Raises:
        ConfigError: for an unknown plugin name (with suggestions) or an option the
            plugin's factory does not take, naming the config key.
    """
    for key, (kind, spec) in specs.items():
        entry = registries.of(kind).get(spec.name, key=f"{key}.name")
        provided = CORE_PROVIDED_KWARGS.get(kind, ())
        for arg in provided:
            if arg in spec.kwargs:
                raise ConfigError(f"{key}.{arg}: set by medxfer itself; remove it from the config")
        check_factory_kwargs(entry, spec.kwargs, key=key, provided=provided)
