"""MONAI Label's train task for a medxfer segmentation run (see :mod:`.guard`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from medxfer.errors import ConfigError, MedxferError
from medxfer.label.finetune import LR_FACTOR, WARMUP_EPOCHS
from medxfer.label.guard import (case_folders, client_message, decision_summary,
                                  train_and_decide)

logger = logging.getLogger(__name__)


class MedxferTrainTask(TrainTask):
    """Fine-tune the model's served run on the datastore's final labels, and serve the
    result only if it is at least as good on held-out labelled cases.

    Request keys (all optional): ``max_epochs``, ``lr_factor`` (the fine-tuning's learning
    rate as a share of the original run's), ``warmup_epochs``, ``val_split``,
    ``test_split`` (the held-out share the guard compares on) and ``seed``. Each
    fine-tuning is a new medxfer run in ``APP/finetuned/<model>/<time>``, kept whatever the
    decision; ``/info`` shows the decision under ``train_stats``.
    """

    def __init__(self, app_dir: Path, model: str, run_dir: Path, strategy: str) -> None:
        super().__init__(f"Fine-tune {model} with medxfer (strategy {strategy}, learning rate "
                         f"{LR_FACTOR:g} x the original's) on the labelled images; served only "
                         "if at least as good on held-out labelled images")
        self.app_dir, self.model, self.original = Path(app_dir), model, Path(run_dir)

    def config(self) -> dict[str, Any]:
        """Options MONAI Label clients show for this trainer."""
        return {"max_epochs": 10, "lr_factor": LR_FACTOR, "warmup_epochs": WARMUP_EPOCHS,
                "val_split": 0.2, "test_split": 0.2, "seed": 0}

    def stats(self) -> dict[str, Any]:
        """The served run and the last guard decision (both scores), for ``/info``."""
        try:
            return decision_summary(self.app_dir, self.model, self.original)
        except MedxferError as exc:
            return {"error": client_message(exc, self.app_dir)}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Fine-tune, compare and decide; returns the decision.

        Raises:
            HTTPException: 400 with medxfer's message when the fine-tuning cannot run or
                fails (bad labels, too few labels, ...), 500 for anything else.
        """
        cases = datastore.labelled_cases() if hasattr(datastore, "labelled_cases") else [
            {"id": Path(d["image"]).name, "image": d["image"], "label": d["label"]}
            for d in datastore.datalist()]
        studies = getattr(datastore, "_datastore_path", None)
        folders = {"STUDIES": Path(studies)} if studies else case_folders(cases)
        try:
            options = self.options(request)
            return train_and_decide(self.app_dir, self.model, self.original, cases,
                                    folders=folders, **options)
        except Exception as exc:
            message = (f"fine-tuning {self.model} failed: "
                       f"{client_message(exc, self.app_dir, folders)}")
            logger.error(message)
            raise HTTPException(status_code=400 if isinstance(exc, MedxferError) else 500,
                                detail=message) from None

    def options(self, request: dict[str, Any]) -> dict[str, Any]:
        """The fine-tuning options of a train request (defaults from :meth:`config`).

        Raises:
            ConfigError: for a value of the wrong type.
        """
        defaults = self.config()
        names = {"max_epochs": "epochs"}
        out: dict[str, Any] = {}
        for key, default in defaults.items():
            value = request.get(key, default)
            try:
                out[names.get(key, key)] = type(default)(value)
            except (TypeError, ValueError):
                raise ConfigError(f"train option {key!r} must be a {type(default).__name__}, "
                                  f"got {value!r}") from None
        return out
