"""MONAI Label's train button with a guard: a fine-tuned candidate is served only when it
segments held-out labelled cases at least as well as the model served now.

One training (:func:`train_and_decide`):

1. fine-tunes the served run on the datastore's labelled images
   (:func:`medxfer.label.finetune.finetune_run`) into ``APP/finetuned/<model>/<time>``;
2. scores the served run and the candidate on the same held-out cases: the candidate's
   **test** cases. They were never trained on, and, unlike its validation cases, did not
   pick its checkpoint either, so the comparison does not favour the candidate;
3. promotes the candidate when its score is at least the served run's (a tie promotes
   it: it learned from more labels), else refuses it. The metric is the mean foreground
   Dice (classes 1.., averaged per case, then over cases; a class absent from both the
   label and the prediction scores 1, absent from one only 0), on each image's own grid
   through exactly the code that serves masks (:func:`predict_masks`).

Every outcome, a failure included, goes into the model's history
(:mod:`medxfer.label.served`); the candidate's folder keeps its decision in ``guard.json``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from medxfer.data.readers import read_image
from medxfer.errors import MedxferError
from medxfer.io import atomic_write_json
from medxfer.label import served as pointer
from medxfer.label.appdir import finetuned_dir
from medxfer.label.finetune import finetune_run, source_lr
from medxfer.tasks.segmentation.prediction import predict_masks
from medxfer.training.amp import resolve_device
from medxfer.workflows.predict import load_run

GUARD = "guard.json"
METRIC = "mean foreground Dice"


def score_run(run_dir: Path, cases: list[dict[str, str]]) -> dict[str, Any]:
    """Mean foreground Dice of ``run_dir``'s served masks against the cases' labels.

    Args:
        run_dir: A finished segmentation run.
        cases: ``{"id", "image", "label"}`` with file paths.

    Returns:
        ``{"dice": mean over cases, "cases": {id: case mean}}``.
    """
    loaded = load_run(run_dir, device=resolve_device("auto"))
    num_classes = int(loaded.sidecar["num_classes"])
    scores: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="medxfer_guard_") as tmp:
        records = predict_masks(loaded, [Path(c["image"]) for c in cases], Path(tmp) / "masks",
                                device=next(loaded.model.parameters()).device)
        for case, record in zip(cases, records):
            pred = read_image(record["mask"]).array[0]
            true = read_image(case["label"]).array[0]
            scores[case["id"]] = mean_foreground_dice(np.rint(pred), np.rint(true), num_classes)
    return {"dice": float(np.mean(list(scores.values()))), "cases": scores}


def mean_foreground_dice(pred: np.ndarray, true: np.ndarray, num_classes: int) -> float:
    """Dice of classes ``1..num_classes-1`` averaged, with the conventions of
    :mod:`medxfer.tasks.segmentation.metrics`: a class absent from both maps scores 1, from
    one only 0 (no Hausdorff distance: it is not needed here and slow on poor masks)."""
    scores = []
    for c in range(1, num_classes):
        p, t = pred == c, true == c
        total = int(p.sum()) + int(t.sum())
        scores.append(1.0 if total == 0 else 2.0 * int((p & t).sum()) / total)
    return float(np.mean(scores)) if scores else float("nan")


def promote(current: float, candidate: float) -> bool:
    """Whether the candidate is at least as good as the served model (ties promote)."""
    return candidate >= current


def train_and_decide(app_dir: Path, model: str, original: Path, cases: list[dict[str, str]],
                     *, epochs: int, lr_factor: float = 0.1, warmup_epochs: float = 1.0,
                     val_split: float = 0.2, test_split: float = 0.2, seed: int = 0,
                     folders: dict[str, Path] | None = None) -> dict[str, Any]:
    """Fine-tune what ``model`` serves on ``cases``, score it against the served run on
    held-out cases and promote it or not (see the module docstring).

    Args:
        app_dir: The app folder.
        model: The model's name.
        original: The run the app was made with.
        cases: Labelled images ``{"id", "image", "label"}``.
        epochs: Fine-tuning epochs.
        lr_factor: The fine-tuning's learning rate as a share of the original run's.
        warmup_epochs: Linear warm-up, in epochs.
        val_split: Share of cases that pick the candidate's checkpoint.
        test_split: Share of cases held out for the comparison (at least one case).
        seed: Seed of the split.
        folders: Name -> folder, written by name in a recorded error message (default:
            the folders of the cases' files).

    Returns:
        The decision, as :func:`decision_summary` gives it.

    Raises:
        MedxferError: when the fine-tuning fails (it is recorded, and no folder is left).
    """
    with pointer.pointer_lock(app_dir, model):
        start = pointer.served_run(app_dir, model, original)
        start_id = pointer.run_id(app_dir, model, start)
        target = _new_folder(app_dir, model)
        options = {"epochs": int(epochs), "lr_factor": float(lr_factor),
                   "warmup_epochs": float(warmup_epochs), "val_split": float(val_split),
                   "test_split": float(test_split), "seed": int(seed)}
        try:
            summary = finetune_run(start, cases, target, epochs=epochs,
                                   lr=source_lr(original) * lr_factor,
                                   warmup_epochs=warmup_epochs, val_split=val_split,
                                   test_split=test_split, seed=seed)
        except Exception as exc:
            message = client_message(exc, app_dir, folders or case_folders(cases))
            pointer.record(app_dir, model, {"event": pointer.FAILED, "candidate": target.name,
                                            "start": start_id, "error": message,
                                            "options": options})
            raise
        held_out = [c for c in cases if c["id"] in set(summary["split_ids"]["test"])]
        current = score_run(start, held_out)
        candidate = score_run(target, held_out)
        promoted = promote(current["dice"], candidate["dice"])
        decision = {"event": pointer.PROMOTED if promoted else pointer.REFUSED,
                    "candidate": target.name, "start": start_id, "previous": start_id,
                    "metric": METRIC, "current_score": current["dice"],
                    "candidate_score": candidate["dice"],
                    "held_out": sorted(current["cases"]),
                    "per_case": {i: {"current": current["cases"][i],
                                     "candidate": candidate["cases"][i]}
                                 for i in sorted(current["cases"])},
                    "cases": summary["cases"], "lr": summary["lr"],
                    "warmup_epochs": summary["warmup_epochs"], "options": options}
        atomic_write_json(target / GUARD, decision)
        pointer.record(app_dir, model, decision,
                       serve=target.name if promoted else False)
    return decision_summary(app_dir, model, original)


def decision_summary(app_dir: Path, model: str, original: Path) -> dict[str, Any]:
    """What ``/info`` shows of a model's training: the served run, the last decision (both
    scores, the held-out cases, promoted or refused), and a failure or restore since then.
    Run ids only, no paths."""
    served = pointer.run_id(app_dir, model, pointer.served_run(app_dir, model, original))
    out: dict[str, Any] = {"served_run": served, "metric": METRIC}
    history = pointer.read_pointer(app_dir, model)["history"]
    decided = [i for i, e in enumerate(history) if e.get("event") in (pointer.PROMOTED,
                                                                      pointer.REFUSED)]
    last = decided[-1] if decided else -1
    if decided:
        out["last_decision"] = {k: history[last].get(k) for k in (
            "event", "candidate", "start", "current_score", "candidate_score", "held_out",
            "time", "lr", "warmup_epochs")}
    for event in history[last + 1:]:
        if event.get("event") == pointer.FAILED:
            out["last_failure"] = {k: event.get(k) for k in ("candidate", "error", "time")}
        elif event.get("event") == pointer.RESTORED:
            out["last_restore"] = {k: event.get(k) for k in ("run", "previous", "time")}
    return out


def case_folders(cases: list[dict[str, str]]) -> dict[str, Path]:
    """The folders the cases' files are in, by the name a message may use instead."""
    folders = {Path(c[key]).resolve().parent for c in cases for key in ("image", "label")}
    return {f"<{folder.name}>": folder for folder in sorted(folders, key=lambda p: -len(str(p)))}


def _new_folder(app_dir: Path, model: str) -> Path:
    """A fresh, unused run folder named by the time."""
    folder = finetuned_dir(app_dir, model)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = folder / stamp, 1
    while target.exists():
        n += 1
        target = folder / f"{stamp}-{n}"
    return target


def client_message(exc: BaseException, app_dir: Path,
                   folders: dict[str, Path] | None = None) -> str:
    """The error as a client may see it: medxfer's own message, with the app folder (and
    ``folders``: name -> folder) written as ``APP`` (and the name) instead of host paths."""
    text = str(exc) if isinstance(exc, MedxferError) else f"{type(exc).__name__}: {exc}"
    for name, folder in {"APP": Path(app_dir), **(folders or {})}.items():
        for form in {str(Path(folder).resolve()), str(folder)}:
            text = text.replace(form, name)
    return text
