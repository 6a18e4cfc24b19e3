"""Which domain a network is looking at: the protocol behind domain-specific layers.

A module that behaves differently per domain (for example the domain-specific batch
normalisation of the ``dsbn`` plugin, or AdaBN's target statistics) defines
``set_domain(domain: str)``. The core calls :func:`set_domain` on the whole network
before every source or target forward pass, in training and in evaluation, so such modules
follow the data without the core knowing any plugin by name. Networks without such
modules are unaffected.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn

from medxfer.errors import ConfigError

SOURCE = "source"
TARGET = "target"
DOMAINS = (SOURCE, TARGET)


def domain_modules(model: nn.Module) -> list[nn.Module]:
    """The submodules of ``model`` (itself included) that define ``set_domain``."""
    return [m for m in model.modules() if callable(getattr(m, "set_domain", None))]


def choose_domain(model: nn.Module, domain: str, run: object) -> bool:
    """Set ``model`` (a finished run's network) to the ``domain`` a user asked for
    (``predict --domain``, ``export --domain``); return whether it has domain-specific
    layers.

    Raises:
        ConfigError: for another name, or ``target`` for a network without such layers
            (its outputs are the same for every domain).
    """
    if domain not in DOMAINS:
        raise ConfigError(f"--domain {domain!r}: use {' or '.join(DOMAINS)}")
    if not domain_modules(model):
        if domain == TARGET:
            raise ConfigError(f"--domain target: run {str(run)!r} has no domain-specific layers "
                              "(domain_adaptation dsbn or adabn), so its outputs are the same "
                              "for every domain; leave --domain out")
        return False
    set_domain(model, domain)
    return True


def set_domain(model: nn.Module, domain: str) -> None:
    """Tell every domain-aware module of ``model`` which domain the next inputs come from.

    Args:
        model: Any network.
        domain: ``"source"`` or ``"target"``.

    Raises:
        ValueError: for another domain name.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {', '.join(DOMAINS)}, got {domain!r}")
    for module in domain_modules(model):
        module.set_domain(domain)


def current_domain(model: nn.Module) -> str:
    """The domain the domain-aware modules of ``model`` are set to (``source`` if none)."""
    for module in domain_modules(model):
        domain = getattr(module, "domain", None)
        if isinstance(domain, str):
            return domain
    return SOURCE


@contextmanager
def in_domain(model: nn.Module, domain: str) -> Iterator[nn.Module]:
    """Run a block with ``model`` set to ``domain``; the previous domain is restored after."""
    before = current_domain(model)
    set_domain(model, domain)
    try:
        yield model
    finally:
        set_domain(model, before)
