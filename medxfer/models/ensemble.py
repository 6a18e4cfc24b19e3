"""A deep ensemble as one network: members trained apart, their outputs averaged."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medxfer.models.network import TransferNetwork, average_outputs


class EnsembleNetwork(nn.Module):
    """Several task networks for the same inputs whose outputs are averaged.

    Built by ``medxfer run`` with ``ensemble.members > 1`` once every member has been
    trained on its own (each member keeps its own test-time augmentation). Classification
    returns the log of the members' mean class probabilities, so a softmax gives that mean
    back and every consumer of a :class:`~medxfer.models.TransferNetwork` (evaluation,
    ``medxfer predict``, export, MONAI Label) can use it unchanged; regression returns the
    mean of the members' outputs.

    Args:
        members: The trained networks (at least one), all with the same ``out_features``.

    Raises:
        ValueError: for no members or members that disagree in ``out_features``.
    """

    def __init__(self, members: Sequence[TransferNetwork]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member network")
        widths = {int(m.out_features) for m in members}
        if len(widths) != 1:
            raise ValueError(f"ensemble members differ in out_features: {sorted(widths)}")
        self.members = nn.ModuleList(members)
        self.out_features = widths.pop()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The averaged task outputs (classification: log mean probabilities)."""
        return average_outputs([member(x) for member in self.members], self.out_features)
