"""The candidate plans ``medxfer run DATA --search N`` compares on validation.

The first candidate is the plan itself; the others each change one choice that the rules
make with the least evidence behind it, most promising first: the learning rate (a third,
three times), for a pretrained network a strategy that keeps more of the pretrained
weights (L2-SP, discriminative learning rates), the input size the rules weighed, the
regularisation (dropout, weight decay) and the next backbone whose weights are here. What a
candidate changes reads the plan, never the dataset's name.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medxfer.config import validate_config
from medxfer.errors import ConfigError
from medxfer.planning import rules as R
from medxfer.planning.plan import Plan, set_dotted
from medxfer.plugins import Registries
from medxfer.tasks import get_task


@dataclass(frozen=True)
class Candidate:
    """One candidate plan: the plan with ``changes`` (dotted config key -> value)."""

    label: str
    why: str
    changes: dict[str, Any] = field(default_factory=dict)

    def apply(self, config: dict[str, Any]) -> dict[str, Any]:
        """A copy of the nested ``config`` with this candidate's changes."""
        out = copy.deepcopy(config)
        for key, value in self.changes.items():
            set_dotted(out, key, copy.deepcopy(value))
        return out


def candidate_plans(plan: Plan, registries: Registries, count: int, *,
                    fixed: Sequence[str] = ()) -> list[Candidate]:
    """Up to ``count`` candidates: the plan first, then one change each.

    Args:
        plan: The plan (its config and summary).
        registries: Plugin registries (which backbones have weights here).
        count: How many candidates at most.
        fixed: Dotted keys the user set (``--set``): no candidate changes them.

    Returns:
        The candidates whose configs are valid, in order of preference.
    """
    found = [Candidate("as planned", "the plan's own choices")]
    for candidate in _variants(plan, registries):
        if len(found) >= count:
            break
        if any(key == f or key.startswith(f + ".") or f.startswith(key + ".")
               for key in candidate.changes for f in fixed):
            continue
        try:
            validate_config(candidate.apply(plan.config), source=f"candidate {candidate.label}")
        except ConfigError:
            continue
        found.append(candidate)
    return found


def _variants(plan: Plan, registries: Registries) -> list[Candidate]:
    lr = float(plan.get("train.optimizer.lr", 1e-3))
    decay = float(plan.get("train.optimizer.weight_decay", 1e-4))
    backbone = plan.get("model.backbone") or {}
    pretrained = backbone.get("pretrained", "none") not in (None, "none")
    masks = get_task(plan.get("task", "classification")).labels_are_masks
    out = [Candidate("lr/3", f"a smaller learning rate ({lr / 3:.2g})",
                     {"train.optimizer.lr": lr / 3}),
           Candidate("lr*3", f"a larger learning rate ({lr * 3:.2g})",
                     {"train.optimizer.lr": lr * 3})]
    if pretrained:
        out.append(Candidate("l2sp", "L2-SP: fine-tuning pulled towards the pretrained "
                                     "weights", {"strategy": {"name": "l2sp"}}))
        out.append(Candidate("discriminative_lr", "smaller learning rates for the layers "
                                                  "nearer the input",
                             {"strategy": {"name": "discriminative_lr"}}))
    size = plan.get("data.preprocess.image_size")
    stored = plan.summary.get("fingerprint") or {}
    if size is not None and not masks and stored.get("min_size") and \
            stored.get("min_size") == stored.get("max_size"):  # one stored size: batchable
        out.append(Candidate("stored size", "the images at their stored size, not resized",
                             {"data.preprocess.image_size": None}))
    if not masks:
        dropout = float(plan.get("model.head.dropout", 0.0) or 0.0)
        out.append(Candidate("dropout 0.5", f"more dropout before the head (0.5, not "
                                            f"{dropout:g})", {"model.head.dropout": 0.5}))
    out.append(Candidate("weight decay x10", f"ten times the weight decay ({decay * 10:.2g})",
                         {"train.optimizer.weight_decay": decay * 10}))
    name = backbone.get("name")
    if pretrained and not masks and name in R.IMAGENET_CLASSIFIERS_CPU:
        device = plan.get("train.device", "cpu")
        order = R.IMAGENET_CLASSIFIERS_CUDA if device == "cuda" else R.IMAGENET_CLASSIFIERS_CPU
        for other in order:
            if other != name and R.supports(registries, other, 2) and \
                    R.offline_weights(registries, other):
                out.append(Candidate(other, f"{other} with its ImageNet weights",
                                     {"model.backbone": {"name": other,
                                                         "pretrained": "imagenet"}}))
                break
    return out
