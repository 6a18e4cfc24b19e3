"""The MONAI Label app class (imported by the app folder's ``main.py``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from monailabel.interfaces.app import MONAILabelApp

from medxfer.label.appdir import read_app
from medxfer.tasks import task_of

logger = logging.getLogger(__name__)


class MedxferLabelApp(MONAILabelApp):
    """Serves the runs named in ``APP/medxfer_app.json``: one infer task per run, and a
    train task per segmentation run.

    Args:
        app_dir: The app folder.
        studies: The datastore (folder of images; MONAI Label keeps labels beside them).
        conf: ``--conf`` options of ``monailabel start_server`` (none are needed).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        from medxfer import __version__

        self.models = read_app(Path(app_dir))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="medxfer",
                         description="medxfer runs served by MONAI Label", version=__version__)

    def init_infers(self) -> dict[str, Any]:
        """One infer task per run, by the run's task."""
        from medxfer.config import load_config
        from medxfer.label.infer import MedxferClassificationInfer, MedxferSegmentationInfer

        infers: dict[str, Any] = {}
        for name, run in self.models.items():
            task = task_of(load_config(run / "config.yaml"))
            if task.labels_are_masks:
                infers[name] = MedxferSegmentationInfer(Path(self.app_dir), name, run)
            elif task.labels_are_classes:
                infers[name] = MedxferClassificationInfer(Path(self.app_dir), name, run)
            else:
                logger.warning("medxfer: run %s is a %s run; MONAI Label serves segmentation "
                               "and classification runs only (skipped)", run, task.name)
        return infers

    def init_trainers(self) -> dict[str, Any]:
        """A fine-tuning task per segmentation run."""
        from medxfer.config import load_config
        from medxfer.label.train import MedxferTrainTask

        trainers: dict[str, Any] = {}
        for name, run in self.models.items():
            config = load_config(run / "config.yaml")
            if task_of(config).labels_are_masks:
                trainers[name] = MedxferTrainTask(Path(self.app_dir), name, run,
                                                  config.strategy.name)
        return trainers
