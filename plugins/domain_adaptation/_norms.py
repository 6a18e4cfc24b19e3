"""Batch normalisation with one set of statistics (and optionally affine parameters) per
domain, selected through the :mod:`medxfer.models.domain` protocol.

Shared by the ``dsbn`` plugin (separate statistics and affine parameters, trained) and
the ``adabn`` plugin (shared affine parameters, target statistics recomputed after
training). Not an entry point: they import it when a run uses them, as it needs torch.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from medxfer.api import DOMAINS, SOURCE


class DomainBatchNorm(nn.Module):
    """One batch-norm layer per domain; ``set_domain`` picks the one the data goes through.

    Works for ``BatchNorm1d/2d/3d`` (and subclasses such as ``SyncBatchNorm``): each domain
    gets a deep copy of the original layer, which stays the ``source`` layer.

    Args:
        norm: The batch-norm layer to split (it becomes the source domain's layer).
        share_affine: Let every domain use the source layer's ``weight`` and ``bias``
            (AdaBN); otherwise each domain has its own (domain-specific batch norm).
    """

    def __init__(self, norm: _BatchNorm, *, share_affine: bool = False) -> None:
        super().__init__()
        copies = {SOURCE: norm}
        for domain in DOMAINS:
            if domain != SOURCE:
                twin = copy.deepcopy(norm)
                if share_affine and norm.affine:
                    twin.weight, twin.bias = norm.weight, norm.bias
                copies[domain] = twin
        self.norms = nn.ModuleDict(copies)
        self.share_affine = share_affine
        self.domain = SOURCE

    def set_domain(self, domain: str) -> None:
        """Route the next inputs through ``domain``'s layer.

        Raises:
            ValueError: for a domain this layer has no statistics for.
        """
        if domain not in self.norms:
            raise ValueError(f"no batch-norm statistics for domain {domain!r}")
        self.domain = domain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` with the current domain's layer."""
        return self.norms[self.domain](x)


def split_batch_norms(model: nn.Module, *, share_affine: bool) -> int:
    """Replace every batch-norm layer of ``model`` by a :class:`DomainBatchNorm`, in place.

    Layers already split are left alone, so calling it twice is harmless.

    Returns:
        How many layers were replaced.
    """
    replaced = 0
    done = {id(n) for d in domain_norms(model) for n in d.norms.values()}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) and id(child) not in done:
                setattr(parent, name, DomainBatchNorm(child, share_affine=share_affine))
                done.add(id(child))
                replaced += 1
    return replaced


def domain_norms(model: nn.Module) -> list[DomainBatchNorm]:
    """The :class:`DomainBatchNorm` layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, DomainBatchNorm)]


def batch_norm_count(model: nn.Module) -> int:
    """Plain batch-norm layers of ``model`` outside any :class:`DomainBatchNorm`."""
    inside = {id(n) for d in domain_norms(model) for n in d.norms.values()}
    return sum(isinstance(m, _BatchNorm) and id(m) not in inside for m in model.modules())


def norm_scope(model: nn.Module, scope: str) -> nn.Module:
    """The part of ``model`` whose batch norms are split: all of it, or its backbone
    (for a segmentation network, the encoder)."""
    return model if scope == "all" else model.backbone
