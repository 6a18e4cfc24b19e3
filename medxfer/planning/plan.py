"""A plan: a complete run config, each choice with the reason for it.

:class:`Plan` is what :func:`medxfer.planning.make_plan` returns and what ``plan.yaml``
holds: the config (a dict ``medxfer run`` validates as any config) and, for every key the
rules set, a one-line reason that ``plan.yaml`` writes as a comment above the key and the
run's report shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import os
from pathlib import Path

import yaml

from medxfer.config import RunConfig, validate_config
from medxfer.io import read_json_object

#: What a planned run's folder keeps: the commented config, and the plan as data.
PLAN_YAML = "plan.yaml"
PLAN_JSON = "plan.json"


@dataclass
class Plan:
    """A planned run config and why each of its values was chosen.

    Attributes:
        config: The run config as nested dicts (what ``plan.yaml`` holds).
        reasons: Dotted config key -> one-line reason.
        summary: Facts about the plan itself (budget, device, probe timings, estimates,
            the fingerprint), written as the header of ``plan.yaml`` and into the run.
    """

    config: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def set(self, key: str, value: Any, reason: str) -> None:
        """Set the dotted config ``key`` to ``value`` for ``reason``."""
        set_dotted(self.config, key, value)
        self.reasons[key] = reason

    def get(self, key: str, default: Any = None) -> Any:
        """The value of the dotted config ``key`` (``default`` when not set)."""
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def run_config(self) -> RunConfig:
        """The plan as a validated run config."""
        return validate_config(self.config, source="the plan")

    def to_yaml(self) -> str:
        """``plan.yaml``: the config with each planned key's reason as a comment above it,
        after a header that says how the plan was made."""
        lines = ["# medxfer plan: a complete run config made by `medxfer plan` from the dataset's",
                 "# fingerprint. Each value's reason is the comment above it; edit any value",
                 "# and run it with `medxfer run plan.yaml`. Rules and evidence: docs/plan.md.",
                 "#"]
        for key, value in self.summary.items():
            if key == "search":
                lines.append(f"# search: {value['winner']} won of {len(value['candidates'])} "
                             f"candidate plans on validation ({value['seconds']:.0f}s; each "
                             "candidate's scores are in plan.json)")
            elif key != "fingerprint":
                lines.append(f"# {key}: {_inline(value)}")
        lines.append("")
        _emit(self.config, "", lines, self.reasons, 0)
        return "\n".join(lines) + "\n"

    def record(self) -> dict[str, Any]:
        """What ``plan.json`` holds: each planned key's value and reason, and how the plan
        was made (budget, device, probe, estimates, fingerprint)."""
        return {"reasons": [{"key": k, "value": v, "reason": r}
                            for k, v, r in self.reason_rows()], **self.summary}

    def reason_rows(self) -> list[tuple[str, str, str]]:
        """``(key, value, reason)`` per planned key, in config order (for reports)."""
        rows = []
        for key, reason in self.reasons.items():
            rows.append((key, _inline(self.get(key)), reason))
        return rows


def set_dotted(config: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` (``train.optimizer.lr``) of the nested ``config`` to
    ``value``, making the sections on the way."""
    node = config
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _inline(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000)
    return text.strip().removesuffix("...").strip()


def _emit(node: dict[str, Any], prefix: str, lines: list[str], reasons: dict[str, str],
          indent: int) -> None:
    pad = "  " * indent
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        reason = reasons.get(dotted)
        if reason:
            lines.append(f"{pad}# {reason}")
        if isinstance(value, dict) and value and not _plugin_spec(dotted):
            lines.append(f"{pad}{key}:")
            _emit(value, f"{dotted}.", lines, reasons, indent + 1)
        else:
            lines.append(f"{pad}{key}: {_inline(value)}")


def _plugin_spec(key: str) -> bool:
    """Plugin specs (``{name: ..., **options}``) are written on one line."""
    return key in ("model.backbone", "strategy", "domain_adaptation")


def read_plan(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """A planned run's ``plan.json`` (``None`` for a run made from a config).

    Raises:
        CheckpointError: when the file is there but unreadable.
    """
    path = Path(run_dir) / PLAN_JSON
    if not path.is_file():
        return None
    return read_json_object(path, what_to_do="it holds the plan this run was made from; "
                            "restore it, or plan again with `medxfer plan`")
