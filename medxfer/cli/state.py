"""What CLI commands share: the plugin manager and lazily built registries."""

from __future__ import annotations

from dataclasses import dataclass, field

import typer

from medxfer.plugins import MedxferPluginManager, Registries, build_registries


@dataclass
class CliState:
    """Per-invocation state stored in ``typer.Context.obj``."""

    manager: MedxferPluginManager
    _registries: Registries | None = field(default=None, repr=False)

    @property
    def registries(self) -> Registries:
        """Registries, built on first use."""
        if self._registries is None:
            import warnings

            from medxfer.cli.console import warn
            from medxfer.plugins import PluginLoadWarning

            known = len(self.manager.broken)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PluginLoadWarning)
                self._registries = build_registries(self.manager)
            for broken in self.manager.broken[known:]:  # reported once, as a load failure is
                warn(broken.describe() + " (skipped)")
        return self._registries


def state_of(ctx: typer.Context) -> CliState:
    """The :class:`CliState` of the running command."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        raise RuntimeError("medxfer CLI state missing: call medxfer.cli.main()")
    return root.obj
