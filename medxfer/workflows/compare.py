"""``medxfer compare``: run a backbone x strategy x seed grid and compare the results.

Every cell of the grid is an ordinary run in ``OUTPUT/runs/<backbone>__<strategy>__seed<k>``.
The grid is resumable: a cell with ``metrics.json`` is finished and skipped, a cell killed
after its first checkpoint is resumed, and a cell killed before it is started again. The
grid's own definition is kept in ``OUTPUT/compare.json``; running a different grid into the
same folder is refused.

With a pretraining config (``--pretrain``), each backbone is first trained on that labelled
source dataset into ``OUTPUT/pretrain/<backbone>`` (:mod:`medxfer.workflows.pretrain`) and the
transfer strategies start from it, so that backbones with no ImageNet weights offline can
still be compared under transfer. ``scratch`` cells always start from random weights.

A backbone of the grid may be given as ``LABEL=NAME`` (an *arm*): the registered backbone
``NAME`` under its own label, so that one backbone can be run several ways side by side,
each arm with its own ``--backbone-set`` values (a transfer-source study: ImageNet through
each ``to_3d`` conversion, self-supervised sources, scratch).

The tables and figures are made by :mod:`medxfer.workflows.compare_summary`.
"""

from __future__ import annotations

import json
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from medxfer.config import (
    PluginSpec,
    RunConfig,
    apply_overrides,
    parse_override,
    validate_config,
)
from medxfer.errors import ConfigError, MedxferError
from medxfer.io import atomic_write_json
from medxfer.locking import entries
from medxfer.plugin_kit import attributes as plugin_attributes
from medxfer.plugins import Registries, build_registries
from medxfer.weights import TRANSFER_SOURCE_JSON, wants_imagenet
from medxfer.workflows.preflight import check_config, check_network, starts_from_random
from medxfer.workflows.pretrain import pretrain
from medxfer.workflows.run import run_pipeline

COMPARE_JSON = "compare.json"
RUNS_DIR = "runs"
PRETRAIN_DIR = "pretrain"
LAST_CHECKPOINT = Path("checkpoints") / "last.pt"


@dataclass(frozen=True)
class Cell:
    """One run of the grid."""

    backbone: str
    strategy: str
    seed: int

    @property
    def name(self) -> str:
        """The cell's folder name, ``<backbone>__<strategy>__seed<k>``."""
        return f"{self.backbone}__{self.strategy}__seed{self.seed}"


@dataclass
class Grid:
    """A planned comparison: the base config, its axes and where each run goes."""

    config: RunConfig
    backbones: list[str]
    strategies: list[str]
    seeds: list[int]
    output: Path
    overrides: list[str]
    pretrain_config: RunConfig | None = None
    backbone_sets: dict[str, list[str]] = field(default_factory=dict)
    arms: dict[str, str] = field(default_factory=dict)

    def backbone_name(self, label: str) -> str:
        """The registered backbone of ``label`` (an arm's, or the label itself)."""
        return self.arms.get(label, label)

    @property
    def cells(self) -> list[Cell]:
        """Every cell, backbone-major, then strategy, then seed."""
        return [Cell(b, s, k) for b in self.backbones for s in self.strategies for k in self.seeds]

    def run_dir(self, cell: Cell) -> Path:
        """The run folder of ``cell``."""
        return self.output / RUNS_DIR / cell.name

    def pretrain_dir(self, backbone: str) -> Path:
        """The pretraining run folder of ``backbone``."""
        return self.output / PRETRAIN_DIR / backbone

    def definition(self) -> dict[str, Any]:
        """What ``compare.json`` records; a resumed grid must match it."""
        return {
            "config": self.config.model_dump(mode="json"),
            "backbones": self.backbones, "strategies": self.strategies, "seeds": self.seeds,
            "pretrain_config": (self.pretrain_config.model_dump(mode="json")
                                if self.pretrain_config else None),
            "backbone_sets": self.backbone_sets,
            **({"arms": self.arms} if self.arms else {}),
        }

    def pretrain_cell_config(self, backbone: str) -> RunConfig:
        """The pretraining config of ``backbone`` (its ``--backbone-set`` values applied)."""
        assert self.pretrain_config is not None
        config = with_backbone(self.pretrain_config, self.backbone_name(backbone))
        return apply_sets(config, self.backbone_sets.get(backbone, []), f"pretrain {backbone}")


def parse_names(text: str, option: str) -> list[str]:
    """``"a,b,c"`` to ``["a", "b", "c"]``, refusing empty and repeated names."""
    names = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ConfigError(f"{option} {text!r}: give comma-separated names, e.g. lenet,alexnet")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{option}: {', '.join(repeated)} given twice")
    return names


_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def split_arms(backbones: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``["lenet", "acs=mobilenet_v2"]`` to the labels ``["lenet", "acs"]`` and the arms
    ``{"acs": "mobilenet_v2"}``.

    Raises:
        ConfigError: for a label that is not a plain folder name, or one given twice.
    """
    labels: list[str] = []
    arms: dict[str, str] = {}
    for text in backbones:
        label, sep, name = (part.strip() for part in text.partition("="))
        if sep and (not name or not _LABEL.match(label) or "__" in label):
            raise ConfigError(f"--backbones {text!r}: expected LABEL=BACKBONE with a label "
                              "of letters, digits, '.', '-' or '_' (e.g. acs=mobilenet_v2)")
        if label in labels:
            raise ConfigError(f"--backbones: {label!r} given twice")
        labels.append(label)
        if sep:
            arms[label] = name
    return labels, arms


def parse_backbone_sets(texts: Sequence[str], backbones: Sequence[str]) -> dict[str, list[str]]:
    """``["alexnet:data.preprocess.image_size=[64,64]", ...]`` to ``{backbone: [KEY=VALUE]}``.

    Raises:
        ConfigError: for an entry without ``NAME:`` or a backbone not in the grid.
    """
    backbones = split_arms(backbones)[0]
    sets: dict[str, list[str]] = {}
    for text in texts:
        name, sep, rest = text.partition(":")
        if not sep or not rest or "=" not in rest:
            raise ConfigError(f"--backbone-set {text!r}: expected BACKBONE:KEY=VALUE, e.g. "
                              "alexnet:data.preprocess.image_size=[64,64]")
        if name not in backbones:
            raise ConfigError(f"--backbone-set {text!r}: {name!r} is not one of --backbones "
                              f"({', '.join(backbones)})")
        parse_override(rest)
        sets.setdefault(name, []).append(rest)
    return sets


def apply_sets(config: RunConfig, sets: Sequence[str], source: str) -> RunConfig:
    """``config`` with ``KEY=VALUE`` overrides applied (as ``--set`` does)."""
    if not sets:
        return config
    return validate_config(apply_overrides(config.model_dump(mode="json"), list(sets)), source,
                           sets)


def backbone_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """The ``--set model.backbone.<option>=...`` values among ``overrides``."""
    options: dict[str, Any] = {}
    for text in overrides:
        path, value = parse_override(text)
        if path[:2] == ["model", "backbone"] and len(path) == 3 and path[2] != "name":
            options[path[2]] = value
    return options


def with_backbone(config: RunConfig, name: str, overrides: Sequence[str] = (), *,
                  pretrained: Any = None) -> RunConfig:
    """``config`` with backbone ``name``.

    The config's backbone options are kept when ``name`` is its own backbone and dropped
    otherwise (they belong to another plugin), except a ``pretrained`` file, folder or
    ``none`` (``imagenet`` is left to each backbone's own default, which is ImageNet for
    the backbones that have it); options given as ``--set model.backbone.<option>=...``
    apply to every backbone. ``pretrained``, when given, replaces the pretrained weights.
    """
    own = config.model.backbone
    options = dict(own.kwargs) if own.name == name else {}
    if own.name == name and getattr(own, "to_3d", None):
        options["to_3d"] = own.to_3d
    carried = own.kwargs.get("pretrained")
    if own.name != name and "pretrained" in own.kwargs and not wants_imagenet(carried):
        options["pretrained"] = carried
    options.update(backbone_overrides(overrides))
    if pretrained is not None:
        options["pretrained"] = pretrained
    data = config.model_dump(mode="json")
    data["model"]["backbone"] = PluginSpec(name=name, **options).model_dump(mode="json")
    return validate_config(data, source=f"backbone {name!r}")


def cell_config(grid: Grid, cell: Cell, registries: Registries) -> RunConfig:
    """The run config of one cell: backbone, strategy and seed set; pretraining applied."""
    pretrained = (str(grid.pretrain_dir(cell.backbone).resolve())
                  if grid.pretrain_config is not None else None)
    config = with_backbone(grid.config, grid.backbone_name(cell.backbone), grid.overrides,
                           pretrained=pretrained)
    data = config.model_dump(mode="json")
    if cell.strategy != grid.config.strategy.name:
        data["strategy"] = {"name": cell.strategy}
    data["train"]["seed"] = cell.seed
    config = validate_config(data, source=f"cell {cell.name}")
    config = apply_sets(config, grid.backbone_sets.get(cell.backbone, []), f"cell {cell.name}")
    strategy = check_config(config, registries)
    if starts_from_random(config, registries, strategy):
        raise ConfigError(
            f"--strategies {cell.strategy}: backbone {cell.backbone!r} would start from random "
            "weights, so this is not transfer. Give --pretrain SOURCE_CONFIG (pretrains each "
            "backbone on a labelled source dataset), set model.backbone.pretrained, or drop "
            "the strategy for this backbone")
    return config


def plan_grid(config: RunConfig, output: str | Path, backbones: Sequence[str],
              strategies: Sequence[str], seeds: int, *, overrides: Sequence[str] = (),
              pretrain_config: RunConfig | None = None,
              backbone_sets: dict[str, list[str]] | None = None,
              registries: Registries | None = None) -> Grid:
    """Check the whole grid (every cell's config and plugins) before anything runs.

    Raises:
        ConfigError: for an unknown backbone or strategy, a bad option, fewer than one seed,
            a transfer cell without weights, or an output folder holding another grid.
    """
    registries = registries or build_registries()
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1")
    base_seed = config.train.seed
    labels, arms = split_arms(backbones)
    grid = Grid(config, labels, list(strategies),
                [base_seed + k for k in range(seeds)], Path(output), list(overrides),
                pretrain_config, dict(backbone_sets or {}), arms)
    for cell in grid.cells:
        cell_config(grid, cell, registries)
    if pretrain_config is not None:
        for backbone in grid.backbones:
            check_config(grid.pretrain_cell_config(backbone), registries)
    _check_output(grid)
    check_backbones(grid, registries)
    return grid


def check_backbones(grid: Grid, registries: Registries) -> None:
    """Build each backbone's network once, as its pretraining and first transfer cell will.

    Missing or corrupt ImageNet weights, a weights file that does not fit, or a backbone
    that does not fit the task then stop the study before its first run, not hours into
    it. Backbones whose work is all finished (a resumed grid) are skipped; a transfer cell
    that starts from its pretraining is built without weights (that run may not exist yet),
    and its data must have the pretraining data's dimensions.

    Raises:
        ConfigError, WeightsError, CheckpointError, DataError: naming the cell or
            pretraining that would fail.
    """
    inputs: dict[str, Any] = {}
    source_dims: dict[str, int] = {}  # backbone -> dimensions of its pretraining data
    for label, backbone, config, use_weights in _first_builds(grid, registries):
        try:
            shape = check_network(config, registries, use_weights=use_weights, inputs=inputs)
        except MedxferError as exc:
            raise type(exc)(f"{label}: {exc}") from None
        if label.startswith("pretrain"):
            source_dims[backbone] = shape.spatial_dims
        elif backbone in source_dims and source_dims[backbone] != shape.spatial_dims:
            raise ConfigError(
                f"{label}: the --pretrain data is {source_dims[backbone]}D but the study's is "
                f"{shape.spatial_dims}D, so {backbone!r} pretrained on it cannot transfer; give "
                "a --pretrain config of the same kind of images")


def _first_builds(grid: Grid,
                  registries: Registries) -> list[tuple[str, str, RunConfig, bool]]:
    """``(label, backbone, config, use_weights)`` of each pretraining, and of each
    backbone's first unfinished cell (a transfer cell where there is one)."""
    builds = []
    if grid.pretrain_config is not None:
        for backbone in grid.backbones:
            done = cell_state(grid.pretrain_dir(backbone), TRANSFER_SOURCE_JSON) == "done"
            builds.append((f"pretrain {backbone}", backbone,
                           grid.pretrain_cell_config(backbone), not done))
    for backbone in grid.backbones:
        todo = [c for c in grid.cells
                if c.backbone == backbone and cell_state(grid.run_dir(c)) != "done"]
        configs = [(c, cell_config(grid, c, registries)) for c in todo]
        transfer = [(c, config) for c, config in configs if plugin_attributes.uses_pretrained(
            registries.strategy.create(c.strategy, key="strategy", **config.strategy.kwargs))]
        if not configs:
            continue
        cell, config = (transfer or configs)[0]
        use_weights = bool(transfer) and grid.pretrain_config is None
        builds.append((f"cell {cell.name}", backbone, config, use_weights))
    return builds


def _check_output(grid: Grid) -> None:
    output = grid.output
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {str(output)!r} is a file, not a folder")
    record = output / COMPARE_JSON
    if record.is_file():
        try:
            saved = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{record} is unreadable ({exc}); choose another --output") from None
        if saved != json.loads(json.dumps(grid.definition())):
            raise ConfigError(
                f"--output {str(output)!r} holds a different comparison ({record}: other "
                "config, backbones, strategies, seeds or pretraining). Resume it with the same "
                "arguments, or choose another --output folder")
    elif output.is_dir() and entries(output):
        raise ConfigError(f"--output {str(output)!r} already holds files that are not a "
                          "`medxfer compare` grid; results are never overwritten. Choose another "
                          "folder")


def cell_state(run_dir: Path, finished_file: str = "metrics.json") -> str:
    """``done``, ``resume`` (a checkpoint exists), ``stale`` (started, no checkpoint) or
    ``new``."""
    if (run_dir / finished_file).is_file():
        return "done"
    if (run_dir / LAST_CHECKPOINT).is_file():
        return "resume"
    return "stale" if run_dir.exists() else "new"


def run_grid(grid: Grid, *, registries: Registries | None = None, progress: bool = True,
             announce: Callable[[str], None] | None = None) -> list[tuple[Cell, Path]]:
    """Pretrain (when asked) and run every unfinished cell; return each cell's folder.

    ``announce`` receives one line per pretraining and cell (what is run, resumed or
    skipped).
    """
    registries = registries or build_registries()
    say = announce or (lambda _msg: None)
    grid.output.mkdir(parents=True, exist_ok=True)
    if not (grid.output / COMPARE_JSON).is_file():
        atomic_write_json(grid.output / COMPARE_JSON, grid.definition())
    if grid.pretrain_config is not None:
        for backbone in grid.backbones:
            folder = grid.pretrain_dir(backbone)
            state = cell_state(folder, TRANSFER_SOURCE_JSON)
            say(f"pretrain {backbone}: {_verb(state)}")
            if state == "done":
                continue
            _clear_stale(folder, state)
            with _named(f"pretrain {backbone}"):
                pretrain(grid.pretrain_cell_config(backbone), folder,
                         registries=registries, resume=state == "resume", progress=progress)
    cells = grid.cells
    for index, cell in enumerate(cells, 1):
        folder = grid.run_dir(cell)
        state = cell_state(folder)
        say(f"[{index}/{len(cells)}] {cell.name}: {_verb(state)}")
        if state == "done":
            continue
        _clear_stale(folder, state)
        with _named(f"cell {cell.name}"):
            run_pipeline(cell_config(grid, cell, registries), folder, registries=registries,
                         resume=state == "resume", progress=progress)
    return [(cell, grid.run_dir(cell)) for cell in cells]


@contextmanager
def _named(label: str) -> Iterator[None]:
    """Prefix a medxfer error raised inside with the cell or pretraining it came from."""
    try:
        yield
    except MedxferError as exc:
        raise type(exc)(f"{label}: {exc}") from None


def _verb(state: str) -> str:
    return {"done": "finished, skipped", "resume": "resuming from its last checkpoint",
            "stale": "restarting (killed before its first checkpoint)", "new": "running"}[state]


def _clear_stale(folder: Path, state: str) -> None:
    """Remove a cell folder that was started but has no checkpoint (nothing to keep)."""
    if state == "stale":
        shutil.rmtree(folder)
