"""Active learning by the served model's uncertainty (MONAI Label strategy and scoring).

:class:`UncertaintyScoring` (``POST /scoring/medxfer_uncertainty``) scores unlabelled
images with :func:`medxfer.label.uncertainty.image_uncertainty` and keeps each score in the
image's datastore information with the run that computed it. :class:`Uncertainty`
(``POST /activelearning/uncertainty``) returns the unlabelled image with the highest
score; it scores the images that have no score from the run served now first, so it
works on a fresh server, and a promoted or restored model re-scores them.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy

from medxfer.label.served import ServedModel

logger = logging.getLogger(__name__)

#: The key of the scores in an image's datastore information: ``{model: {run, score}}``.
SCORE_KEY = "medxfer_uncertainty"


class UncertaintyScoring(ScoringMethod):
    """Score unlabelled images by the served model's uncertainty.

    Request keys (optional): ``model`` (default: the first segmentation model) and
    ``rescore`` (score again even where the served run has scored already).

    Args:
        runs: The served segmentation models by name.
    """

    def __init__(self, runs: dict[str, ServedModel]) -> None:
        super().__init__("Uncertainty of the served medxfer model (normalised entropy of its "
                         "probabilities around the structures): higher is labelled first")
        self.runs = runs

    def model(self, request: dict[str, Any]) -> str:
        """The model a request asks for.

        Raises:
            HTTPException: 400 for a model that is not a served segmentation model.
        """
        name = request.get("model") or next(iter(self.runs))
        if name not in self.runs:
            raise HTTPException(status_code=400, detail=f"no segmentation model {name!r}; "
                                f"uncertainty is computed for {', '.join(self.runs)}")
        return str(name)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        """Score the unlabelled images; returns ``{model, run, scored, scores}``."""
        from medxfer.label.uncertainty import image_uncertainty

        model = self.model(request)
        loaded = self.runs[model].get()
        run = self.runs[model].run_id(loaded)
        rescore = bool(request.get("rescore", False))
        scores: dict[str, float] = {}
        scored = 0
        for image_id in sorted(datastore.get_unlabeled_images()):
            stored = dict(datastore.get_image_info(image_id).get(SCORE_KEY) or {})
            mine = stored.get(model) or {}
            if mine.get("run") == run and "score" in mine and not rescore:
                scores[image_id] = float(mine["score"])
                continue
            score = image_uncertainty(loaded, datastore.get_image_uri(image_id))
            stored[model] = {"run": run, "score": score}
            datastore.update_image_info(image_id, {SCORE_KEY: stored})
            scores[image_id] = score
            scored += 1
        logger.info("medxfer uncertainty of %s (run %s): %d images scored now, %d in all",
                    model, run, scored, len(scores))
        return {"model": model, "run": run, "scored": scored, "scores": scores}


class Uncertainty(Strategy):
    """The unlabelled image the served model is least sure about.

    Args:
        scoring: The scoring method that computes and stores the scores.
    """

    def __init__(self, scoring: UncertaintyScoring) -> None:
        super().__init__("Unlabelled image the served model is least sure about (scores "
                         "from medxfer_uncertainty, computed where missing)")
        self.scoring = scoring

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        """``{"id", "uncertainty", "model", "run"}``, or ``None`` when all are labelled."""
        result = self.scoring({"model": request.get("model")}, datastore)
        scores = result["scores"]
        if not scores:
            return None
        image = max(sorted(scores), key=lambda i: scores[i])
        return {"id": image, "uncertainty": scores[image], "model": result["model"],
                "run": result["run"]}
