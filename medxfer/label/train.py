"""MONAI Label's train task for a medxfer segmentation run (see :mod:`.finetune`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from medxfer.label.appdir import current_run, finetuned_dir
from medxfer.label.finetune import finetune_run


class MedxferTrainTask(TrainTask):
    """Fine-tune the model's current run on the datastore's final labels with medxfer.

    Request keys (all optional): ``max_epochs``, ``val_split``, ``test_split``, ``seed``.
    Each fine-tuning is a new medxfer run in ``APP/finetuned/<model>/<timestamp>``; the
    model's infer task serves the newest one from then on.
    """

    def __init__(self, app_dir: Path, model: str, run_dir: Path, strategy: str) -> None:
        super().__init__(f"Fine-tune {model} with medxfer (strategy {strategy}) on the "
                         "labelled images of the datastore")
        self.app_dir, self.model, self.original = Path(app_dir), model, Path(run_dir)

    def config(self) -> dict[str, Any]:
        """Options MONAI Label clients show for this trainer."""
        return {"max_epochs": 10, "val_split": 0.2, "test_split": 0.1, "seed": 0}

    def stats(self) -> dict[str, Any]:
        """The metrics of the run the model serves now."""
        run = current_run(self.app_dir, self.model, self.original)
        path = run / "metrics.json"
        if not path.is_file():
            return {}
        metrics = json.loads(path.read_text(encoding="utf-8"))
        history, best = metrics.get("history") or [], metrics.get("best_epoch")
        monitor = metrics.get("monitor", "val_dice")
        best_metric = next((h.get(monitor) for h in history if h.get("epoch") == best), None)
        return {"run": str(run), "monitor": monitor, "best_epoch": best,
                "best_metric": best_metric, "test": metrics.get("test")}

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Fine-tune on every image that has a final label; returns the run's summary."""
        cases = [{"id": Path(d["image"]).name, "image": d["image"], "label": d["label"]}
                 for d in datastore.datalist()]
        source = current_run(self.app_dir, self.model, self.original)
        target = finetuned_dir(self.app_dir, self.model) / time.strftime("%Y%m%d-%H%M%S")
        defaults = self.config()
        return finetune_run(source, cases, target,
                            epochs=int(request.get("max_epochs", defaults["max_epochs"])),
                            val_split=float(request.get("val_split", defaults["val_split"])),
                            test_split=float(request.get("test_split", defaults["test_split"])),
                            seed=int(request.get("seed", defaults["seed"])))
