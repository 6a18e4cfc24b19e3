"""Plugin manager factory, safe entry-point loading and one registry per plugin kind.

Nothing here runs at import time: :func:`create_plugin_manager` builds a fresh manager
each time it is called, and :func:`build_registries` asks the loaded plugins to register
their factories only when a command needs them.
"""

from __future__ import annotations

import difflib
import importlib.metadata as importlib_metadata
import inspect
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy

from medxfer import hookspecs
from medxfer.errors import ConfigError, MedxferError, PluginError

ENTRY_POINT_GROUP = "medxfer"
#: The distribution of medxfer's own plugins, which register before any other.
BUILTIN = "medxfer"
STRICT_ENV = "MEDXFER_STRICT_PLUGINS"

#: Plugin kinds, each with the registration hook that fills its registry.
KIND_HOOKS: dict[str, str] = {
    "backbone": "medxfer_register_backbones",
    "strategy": "medxfer_register_strategies",
    "domain_adaptation": "medxfer_register_domain_adaptation",
    "combiner": "medxfer_register_combiners",
}


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded and was skipped."""


@dataclass(frozen=True)
class PluginOrigin:
    """Where a loaded plugin comes from."""

    plugin: str
    distribution: str
    version: str


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that failed to load, with the reason."""

    plugin: str
    distribution: str
    version: str
    error: str

    def describe(self) -> str:
        """One line naming the plugin, its distribution and what went wrong."""
        return (
            f"plugin {self.plugin!r} from {self.distribution} {self.version} failed to load: "
            f"{self.error}"
        )


@dataclass
class MedxferPluginManager:
    """A pluggy manager plus what medxfer knows about each plugin's origin."""

    pm: pluggy.PluginManager
    origins: dict[str, PluginOrigin] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``pm.hook``)."""
        return self.pm.hook

    def register(self, plugin: object, name: str | None = None,
                 origin: PluginOrigin | None = None) -> str:
        """Register ``plugin``, check its hooks, and remember where it comes from.

        Raises:
            PluginError: when the plugin implements a hook that does not exist (a
                misspelt hook) or with arguments the hook does not have.
        """
        try:
            registered = self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {name or plugin!r}: {exc}") from exc
        plugin_name = registered or name or self.pm.get_name(plugin) or repr(plugin)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(plugin)
            raise PluginError(
                f"plugin {plugin_name!r} implements a hook medxfer does not define ({exc}); "
                "check the hook name against docs/plugin_hooks.md"
            ) from exc
        if origin is not None:
            self.origins[plugin_name] = origin
        return plugin_name

    def unregister(self, plugin: object) -> None:
        """Remove a plugin registered with :meth:`register`."""
        name = self.pm.get_name(plugin)
        self.pm.unregister(plugin)
        self.origins.pop(name or "", None)

    def origin_of(self, plugin_name: str) -> PluginOrigin:
        """The origin recorded for ``plugin_name`` (``local`` when registered by hand)."""
        return self.origins.get(plugin_name, PluginOrigin(plugin_name, "local", "-"))


def strict_mode() -> bool:
    """Whether ``MEDXFER_STRICT_PLUGINS`` asks for broken plugins to be fatal."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def iter_entry_points() -> Iterable[tuple[importlib_metadata.EntryPoint, str, str]]:
    """Yield ``(entry_point, distribution, version)`` for every ``medxfer`` entry point."""
    seen: set[tuple[str, str]] = set()
    for dist in importlib_metadata.distributions():
        dist_name = dist.metadata["Name"] or "unknown"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            key = (dist_name, ep.name)
            if key in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(key)
            yield ep, dist_name, dist.version


def create_plugin_manager(*, load_entry_points: bool = True,
                          strict: bool | None = None) -> MedxferPluginManager:
    """Build a fresh plugin manager with medxfer's hook specifications.

    Entry points of the ``medxfer`` group are loaded one at a time. A plugin that fails to
    import, or that implements a misspelt hook, is reported by name (plugin, distribution
    and version) as a :class:`PluginLoadWarning` and skipped, unless strict mode is on.

    Args:
        load_entry_points: Load installed plugins (built-in ones included).
        strict: Make a broken plugin fatal; defaults to ``MEDXFER_STRICT_PLUGINS``.

    Returns:
        The manager; ``manager.broken`` lists the plugins that were skipped.

    Raises:
        PluginError: in strict mode, for the first plugin that fails to load.
    """
    strict = strict_mode() if strict is None else strict
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    manager = MedxferPluginManager(pm)
    if not load_entry_points:
        return manager
    for ep, dist_name, version in iter_entry_points():
        origin = PluginOrigin(ep.name, dist_name, version)
        if pm.has_plugin(ep.name):
            _skip(manager, origin, "another plugin is already registered under this name",
                  strict)
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import error must be reported, not fatal
            _skip(manager, origin, f"import failed: {type(exc).__name__}: {exc}", strict)
            continue
        try:
            manager.register(plugin, name=ep.name, origin=origin)
        except PluginError as exc:
            _skip(manager, origin, str(exc), strict)
    return manager


def _skip(manager: MedxferPluginManager, origin: PluginOrigin, error: str,
          strict: bool) -> None:
    broken = BrokenPlugin(origin.plugin, origin.distribution, origin.version, error)
    if strict:
        raise PluginError(broken.describe() + f" (strict mode: unset {STRICT_ENV} to skip it)")
    manager.broken.append(broken)
    warnings.warn(broken.describe() + f" (skipped; set {STRICT_ENV}=1 to make this fatal)",
                  PluginLoadWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------------------


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
            ConfigError: for an unknown name or option.
            PluginError: when an installed (not built-in) plugin's factory fails with
                anything but a medxfer error, naming the plugin and its distribution.
        """
        entry = self.get(name, key=key)
        check_factory_kwargs(entry, kwargs, key=key)
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

    def of(self, kind: str) -> Registry:
        """The registry of ``kind`` (one of :data:`KIND_HOOKS`)."""
        if kind not in KIND_HOOKS:
            raise ValueError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KIND_HOOKS)}")
        return getattr(self, kind)

    def all_entries(self) -> list[RegistryEntry]:
        """Every entry of every kind."""
        return [e for kind in KIND_HOOKS for e in self.of(kind).entries()]


def build_registries(manager: MedxferPluginManager | None = None, *,
                     strict: bool | None = None) -> Registries:
    """Ask every loaded plugin to register its factories, one registry per kind.

    Each plugin's registration hooks are called separately so that every entry records
    which plugin (and distribution) registered it. medxfer's own plugins register first,
    so an installed plugin cannot take a built-in name. A plugin whose registration hook
    raises, that registers a name another plugin has, or that calls ``register`` wrongly
    is skipped as a whole (reported in ``manager.broken`` and as a
    :class:`PluginLoadWarning`), as a plugin that fails to import is, unless strict mode
    is on.

    Raises:
        PluginError: in strict mode, for the first plugin that fails to register.
    """
    manager = manager or create_plugin_manager()
    strict = strict_mode() if strict is None else strict
    registries = Registries(**{kind: Registry(kind) for kind in KIND_HOOKS})
    staged: dict[str, list[RegistryEntry]] = {}
    failures: dict[str, str] = {}
    for kind, hook_name in KIND_HOOKS.items():
        hook = getattr(manager.hook, hook_name)
        # pluggy returns implementations last-registered first; register in load order.
        for impl in reversed(hook.get_hookimpls()):
            name = impl.plugin_name
            entries = staged.setdefault(name, [])
            if name in failures:
                continue
            origin = manager.origin_of(name)
            try:
                impl.function(register=_register_callback(entries, kind, origin))
            except PluginError as exc:
                failures[name] = str(exc)
            except Exception as exc:  # noqa: BLE001 - name the plugin whose hook failed
                failures[name] = f"{hook_name} raised {type(exc).__name__}: {exc}"
    builtin_first = sorted(staged, key=lambda n: manager.origin_of(n).distribution != BUILTIN)
    for name in builtin_first:
        problem = failures.get(name) or _clash(staged[name], registries)
        if problem:
            _skip(manager, manager.origin_of(name), problem, strict)
            continue
        for entry in staged[name]:
            registries.of(entry.kind).add(entry)
    return registries


def _clash(entries: list[RegistryEntry], registries: Registries) -> str | None:
    """Why ``entries`` (one plugin's) cannot join ``registries``: a name taken, or twice."""
    seen: dict[tuple[str, str], RegistryEntry] = {}
    for entry in entries:
        registry = registries.of(entry.kind)
        first = (registry.get(entry.name) if entry.name in registry
                 else seen.get((entry.kind, entry.name)))
        if first is not None:
            return (f"{entry.kind} {entry.name!r} is registered twice: by plugin "
                    f"{first.plugin!r} ({first.distribution} {first.version}) and by plugin "
                    f"{entry.plugin!r} ({entry.distribution} {entry.version}); uninstall or "
                    "rename one of them")
        seen[(entry.kind, entry.name)] = entry
    return None


def _register_callback(entries: list[RegistryEntry], kind: str,
                       origin: PluginOrigin) -> Callable[..., None]:
    def register(name: str, factory: Callable[..., Any], *, description: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {origin.plugin!r} registered a {kind} without a name")
        if not callable(factory):
            raise PluginError(
                f"plugin {origin.plugin!r} registered {kind} {name!r} with a factory that "
                "is not callable"
            )
        doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
        entries.append(RegistryEntry(name, kind, factory, origin.plugin, origin.distribution,
                                     origin.version, doc))

    return register


#: Keyword arguments the core itself passes to factories of each kind.
CORE_PROVIDED_KWARGS: dict[str, tuple[str, ...]] = {
    "backbone": ("in_channels", "spatial_dims", "num_classes"),
    "strategy": (),
    "domain_adaptation": (),
    "combiner": (),
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
