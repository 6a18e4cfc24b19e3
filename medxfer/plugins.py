"""Plugin manager factory, safe entry-point loading, and filling the registries.

Nothing here runs at import time: :func:`create_plugin_manager` builds a fresh manager
each time it is called, and :func:`build_registries` asks the loaded plugins to register
their factories (in :mod:`medxfer.registry`) only when a command needs them.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as importlib_metadata
import inspect
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pluggy

from medxfer import hookspecs
from medxfer.errors import PluginError
from medxfer.plugin_kit.capabilities import BackboneCapabilities
from medxfer.registry import (  # noqa: F401 - re-exported: commands import them from here
    BUILTIN,
    CORE_PROVIDED_KWARGS,
    KIND_HOOKS,
    Registries,
    Registry,
    RegistryEntry,
    check_factory_kwargs,
    check_plugin_specs,
    unknown_name_message,
)

ENTRY_POINT_GROUP = "medxfer"
STRICT_ENV = "MEDXFER_STRICT_PLUGINS"


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
    def register(name: str, factory: Callable[..., Any], *, description: str = "",
                 capabilities: BackboneCapabilities | dict[str, Any] | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {origin.plugin!r} registered a {kind} without a name")
        if not callable(factory):
            raise PluginError(
                f"plugin {origin.plugin!r} registered {kind} {name!r} with a factory that "
                "is not callable"
            )
        doc = description or (inspect.getdoc(factory) or "").split("\n")[0]
        caps = None if capabilities is None else \
            _backbone_capabilities(capabilities, kind, name, factory, origin)
        entries.append(RegistryEntry(name, kind, factory, origin.plugin, origin.distribution,
                                     origin.version, doc, caps))

    return register


def _backbone_capabilities(value: Any, kind: str, name: str, factory: Callable[..., Any],
                           origin: PluginOrigin) -> BackboneCapabilities:
    """``value`` as capabilities, the output kind filled in from the factory's signature.

    Raises:
        PluginError: naming the plugin and the entry for capabilities of another kind than
            a backbone, invalid ones, or an output kind the factory's signature contradicts.
    """
    where = f"plugin {origin.plugin!r} registered {kind} {name!r}"
    if kind != "backbone":
        raise PluginError(f"{where} with capabilities; only backbones declare them")
    try:
        caps = BackboneCapabilities.from_value(value)
    except (TypeError, ValueError) as exc:
        raise PluginError(f"{where} with invalid capabilities: {exc}") from None
    try:
        takes_classes = "num_classes" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        takes_classes = None
    derived = None if takes_classes is None else \
        ("segmentation" if takes_classes else "features")
    if caps.output is None:
        if derived is None:
            raise PluginError(f"{where}: its capabilities must give output (features or "
                              "segmentation), as the factory's signature cannot be read")
        return dataclasses.replace(caps, output=derived)
    if derived is not None and caps.output != derived:
        raise PluginError(f"{where} with output {caps.output!r}, but its factory "
                          f"{'takes' if takes_classes else 'does not take'} num_classes, "
                          "which the core passes to segmentation factories only")
    return caps
