"""The MONAI Label app class (imported by the app folder's ``main.py``)."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from medxfer.label.appdir import read_app
from medxfer.label.served import ServedModel
from medxfer.tasks import task_of

logger = logging.getLogger(__name__)

#: Names of the files MONAI Label's endpoints write an uploaded image to.
_UPLOAD_NAME = re.compile(r"tmp[A-Za-z0-9_]{6,}(\.[A-Za-z0-9.]+)?")


class MedxferLabelApp(MONAILabelApp):
    """Serves the runs named in ``APP/medxfer_app.json``: one infer task per run, a train
    task (fine-tuning behind a guard) per segmentation run, the ``random``, ``first`` and
    ``uncertainty`` active-learning strategies and the ``medxfer_uncertainty`` scoring
    method, over a datastore that checks labels on submission.

    Args:
        app_dir: The app folder.
        studies: The datastore (folder of images; MONAI Label keeps labels beside them).
        conf: ``--conf`` options of ``monailabel start_server`` (none are needed).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        from medxfer import __version__
        from medxfer.config import load_config

        self.models = read_app(Path(app_dir))
        self.tasks = {name: task_of(load_config(run / "config.yaml"))
                      for name, run in self.models.items()}
        self.runs = {name: ServedModel(Path(app_dir), name, run)
                     for name, run in self.models.items()}
        self.segmentation = [n for n, t in self.tasks.items() if t.labels_are_masks]
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name="medxfer",
                         description="medxfer runs served by MONAI Label", version=__version__)

    def init_datastore(self) -> Any:
        """A local datastore that checks labels against the segmentation models' classes
        (a remote one, DICOMweb or XNAT, as MONAI Label makes it)."""
        from medxfer.label.datastore import MedxferDatastore
        from medxfer.training.checkpoints import read_sidecar

        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        classes = [int(read_sidecar(self.models[n])["num_classes"]) for n in self.segmentation]
        return MedxferDatastore(self.studies, max(classes) if classes else None,
                                extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                                auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                                read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self) -> dict[str, Any]:
        """One infer task per run, by the run's task."""
        from medxfer.label.infer import MedxferClassificationInfer, MedxferSegmentationInfer

        infers: dict[str, Any] = {}
        for name, task in self.tasks.items():
            if task.labels_are_masks:
                infers[name] = MedxferSegmentationInfer(self.runs[name])
            elif task.labels_are_classes:
                infers[name] = MedxferClassificationInfer(self.runs[name])
            else:
                logger.warning("medxfer: model %s is a %s run; MONAI Label serves segmentation "
                               "and classification runs only (skipped)", name, task.name)
        return infers

    def init_trainers(self) -> dict[str, Any]:
        """A guarded fine-tuning task per segmentation run."""
        from medxfer.config import load_config
        from medxfer.label.train import MedxferTrainTask

        return {name: MedxferTrainTask(Path(self.app_dir), name, self.models[name],
                                       load_config(self.models[name] / "config.yaml")
                                       .strategy.name)
                for name in self.segmentation}

    def init_strategies(self) -> dict[str, Any]:
        """``random``, ``first`` (the first unlabelled image by id) and, with a segmentation
        model, ``uncertainty``."""
        from medxfer.label.activelearning import Uncertainty

        strategies: dict[str, Any] = {"random": Random(), "first": First()}
        if self.segmentation:
            strategies["uncertainty"] = Uncertainty(self._uncertainty_scoring())
        return strategies

    def init_scoring_methods(self) -> dict[str, Any]:
        """``medxfer_uncertainty`` with a segmentation model."""
        return {"medxfer_uncertainty": self._uncertainty_scoring()} if self.segmentation else {}

    def _uncertainty_scoring(self) -> Any:
        from medxfer.label.activelearning import UncertaintyScoring

        if not hasattr(self, "_scoring"):
            self._scoring = UncertaintyScoring({n: self.runs[n] for n in self.segmentation})
        return self._scoring

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's inference for an image of the datastore (or an uploaded file or a
        session); 400 naming the id for anything else, instead of reading a host path.

        Raises:
            HTTPException: 400 for an unknown image id.
        """
        image = request.get("image")
        if isinstance(image, str) and not self._known_image(image, datastore):
            raise HTTPException(status_code=400, detail=f"no image {image!r} in the datastore; "
                                "pass the id of a datastore image (GET /datastore/?output=all "
                                "lists them) or upload the image as a file")
        return super().infer(request, datastore)

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """MONAI Label's next sample without the image's host path (clients download it
        by id)."""
        result = super().next_sample(request)
        result.pop("path", None)
        return result

    def _known_image(self, image: str, datastore: Any) -> bool:
        """Whether ``image`` is a datastore id, or a file MONAI Label made for this request
        (an upload in the temporary folder, or a session's image)."""
        datastore = datastore or self.datastore()
        if image and image in datastore.list_images():
            return True
        if not image or not os.path.exists(image):
            return False
        path = Path(image).resolve()
        if path.parent == Path(tempfile.gettempdir()).resolve() and \
                _UPLOAD_NAME.fullmatch(path.name):
            return True
        sessions = self.sessions()
        root = Path(sessions.store_path).resolve() if sessions else None
        return root is not None and root in path.parents
