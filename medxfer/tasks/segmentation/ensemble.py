"""The segmentation half of :func:`medxfer.workflows.ensemble.run_ensemble`.

Members predict whole images case by case in lockstep (one case's probability maps of all
members in memory at a time, never the whole test set). The combiner is fitted with the
members' validation mean foreground Dice as their scores (validation probability maps are
not gathered: images may differ in size), then combines each test case's maps
``[E, 1, C, *spatial]``. Members must give every case the same label map (the same
preprocessing of the masks), or the ensemble is refused naming the case.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch

from medxfer import report as R
from medxfer.errors import ConfigError
from medxfer.tasks.combining import combine, fit_combiner
from medxfer.tasks.segmentation import metrics as S
from medxfer.tasks.segmentation.inference import iter_case_predictions
from medxfer.tasks.summary import clean as _clean

if TYPE_CHECKING:  # pragma: no cover
    from medxfer.workflows.ensemble import Member

PER_CASE_CSV = "per_case.csv"


def evaluate_segmentation_ensemble(members: Sequence[Member], combiner: Any,
                                   info: dict[str, Any], staging: Path,
                                   device: torch.device) -> dict[str, Any]:
    """Score every member and the ensemble on the test cases; write per_case.csv and figures.

    Args:
        members: The members, data loaded (see :func:`medxfer.workflows.ensemble.load_member_data`).
        combiner: The combiner object; fitted here on validation scores.
        info: ``{"name": ..., "options": ...}`` of the combiner.
        staging: The folder the outputs are written to.
        device: Inference device.

    Returns:
        The summary (without ``combiner`` and ``figures``, which the caller adds).
    """
    ref = members[0]
    names = list(ref.loaded.class_names)
    num_classes = int(ref.loaded.sidecar["num_classes"])
    foreground = S.foreground_names(num_classes, names)

    def score(member: Member, item: dict[str, Any], probs: torch.Tensor) -> Any:
        return S.case_metrics(probs.argmax(dim=0).numpy(), item["label"][0].numpy(),
                              num_classes, names, spacing=member.config.data.preprocess.spacing,
                              case_id=str(item.get("id", "")))

    val_cases: list[list[Any]] = [[] for _ in members]
    for items in _lockstep(members, "val", device):
        for k, (item, probs) in enumerate(items):
            val_cases[k].append(score(members[k], item, probs))
    member_val = [S.segmentation_summary(cases) for cases in val_cases]
    scores = [float(v["dice"]) for v in member_val]
    fit_combiner(combiner, None, None, scores)

    test_cases: list[list[Any]] = [[] for _ in members]
    ensemble_cases, rows = [], []
    label = f"ensemble ({info['name']})"
    for items in _lockstep(members, "test", device):
        for k, (item, probs) in enumerate(items):
            test_cases[k].append(score(members[k], item, probs))
        stacked = torch.stack([probs for _, probs in items])[:, None]  # [E, 1, C, *spatial]
        combined = combine(combiner, stacked, info["name"])[0].float()
        case = score(ref, items[0][0], combined)
        ensemble_cases.append(case)
        rows.append({"id": case.id, "ensemble_dice": case.mean_dice,
                     **{f"{m.label}_dice": test_cases[k][-1].mean_dice
                        for k, m in enumerate(members)}})

    member_rows = [{**m.describe(), "val": _clean(member_val[k]),
                    "test": _clean(S.segmentation_summary(test_cases[k]))}
                   for k, m in enumerate(members)]
    R.write_per_case_csv(staging / PER_CASE_CSV, rows, first=["id", "ensemble_dice"])
    dice = np.array([c.dice for c in ensemble_cases]).reshape(-1, len(foreground))
    R.plot_dice_boxplot(dice, foreground, staging / "figures" / "dice_per_class.png",
                        title=f"Test Dice per class, {label}")
    return {"task": "segmentation", "class_names": names, "runs": [m.run for m in members],
            "members": member_rows,
            "ensemble": {"label": label, "val": None,
                         "test": _clean(S.segmentation_summary(ensemble_cases))},
            "member_scores": {"metric": "val dice", "values": scores},
            "splits": {"val": len(val_cases[0]), "test": len(ensemble_cases)},
            "per_case": PER_CASE_CSV}


def _lockstep(members: Sequence[Member], split: str,
              device: torch.device) -> Iterator[list[tuple[dict[str, Any], torch.Tensor]]]:
    """Each case's ``(item, probabilities [C, *spatial])`` from every member, checked.

    Raises:
        ConfigError: when members give a case different label maps or map sizes.
    """
    streams = [iter_case_predictions(m.loaded.model, m.datasets[split], m.config,
                                     device=device, precision=m.precision) for m in members]
    for items in zip(*streams):
        ref_item, ref_probs = items[0]
        for member, (item, probs) in zip(members[1:], items[1:]):
            same = (item["label"].shape == ref_item["label"].shape
                    and torch.equal(item["label"], ref_item["label"])
                    and probs.shape == ref_probs.shape)
            if not same:
                raise ConfigError(
                    f"runs {members[0].run!r} and {member.run!r} preprocess {split} case "
                    f"{ref_item.get('id')!r} differently (label maps "
                    f"{list(ref_item['label'].shape)} vs {list(item['label'].shape)}); "
                    "segmentation ensemble members must share data.preprocess")
        yield list(items)
