"""MONAI Label's local datastore with labels checked on submission and no host paths.

``PUT /datastore/label`` calls :meth:`MedxferDatastore.save_label` from the endpoint, so
an ``HTTPException`` raised there reaches the client as it is: a label that does not fit
its image (see :func:`medxfer.label.labels.check_label`) is refused with 400 and the
reason, and nothing is saved. Image information and the datastore listing name files by
their place in the studies folder, never by host path; :meth:`labelled_cases` gives the
trainer the full paths.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from medxfer.errors import DataError


class MedxferDatastore(LocalDatastore):
    """A :class:`LocalDatastore` that checks labels against the models' classes.

    Args:
        studies: The studies folder.
        num_classes: Classes (with background) the served segmentation models know.
        **kwargs: :class:`LocalDatastore`'s options.
    """

    def __init__(self, studies: str, num_classes: int | None, **kwargs: Any) -> None:
        self.num_classes = num_classes
        super().__init__(studies, **kwargs)

    def save_label(self, image_id: str, label_filename: str, label_tag: str,
                   label_info: dict[str, Any]) -> str:
        """Save the label after checking it; 400 with the reason when it does not fit."""
        from medxfer.label.labels import check_label

        image = self.get_image_uri(image_id)
        if not image:
            raise HTTPException(status_code=400, detail=f"no image {image_id!r} in the "
                                "datastore; upload the image first (PUT /datastore/image)")
        if self.num_classes is not None:
            try:
                check_label(image, label_filename, self.num_classes, image_id=image_id)
            except DataError as exc:
                raise HTTPException(status_code=400, detail=f"label refused: {exc}") from None
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def labelled_cases(self) -> list[dict[str, str]]:
        """``{"id", "image", "label"}`` (full paths) of every image with a final label."""
        return [{"id": i, "image": self.get_image_uri(i),
                 "label": self.get_label_uri(i, DefaultLabelTag.FINAL)}
                for i in sorted(self.get_labeled_images())]

    def datalist(self, full_path: bool = True) -> list[dict[str, Any]]:
        """The final-labelled images, paths relative to the studies folder (what
        ``GET /datastore/?output=train`` shows; ``full_path`` is ignored)."""
        root = os.path.realpath(self._datastore_path)
        return [{k: os.path.relpath(v, root) if k in ("image", "label") else v
                 for k, v in d.items()} for d in super().datalist()]

    def get_image_info(self, image_id: str) -> dict[str, Any]:
        """The image's information without its host path."""
        info = super().get_image_info(image_id)
        info.pop("path", None)
        return info
