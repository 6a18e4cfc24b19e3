"""MONAI Label integration: serve medxfer runs to 3D Slicer / OHIF and fine-tune them there.

``medxfer label init`` writes a MONAI Label app folder (``main.py`` and
``medxfer_app.json``) that names one or more finished runs; ``medxfer label serve`` starts
MONAI Label's server with it. The app (:mod:`medxfer.label.app`) has, per run:

* an infer task (:mod:`medxfer.label.infer`) built from the run's saved config,
  preprocessing and selected weights through medxfer's own ``load_run`` and prediction
  code, so a mask from MONAI Label is the mask ``medxfer predict`` writes;
* for segmentation runs, a train task (:mod:`medxfer.label.train`) that fine-tunes the
  served run with its own medxfer strategy on the labels saved in the MONAI Label
  datastore, and a guard (:mod:`medxfer.label.guard`) that serves the fine-tuned run only
  if it scores at least as well on held-out labelled images (:mod:`medxfer.label.served`
  records which run is served);
* labels checked on submission (:mod:`medxfer.label.datastore`), active learning by the
  served model's uncertainty (:mod:`medxfer.label.activelearning`) and a server closed to
  other web pages (:mod:`medxfer.label.origins`).

Nothing is downloaded at start-up. Needs the optional ``label`` extra
(``pip install "medxfer[label]"``); the modules that import ``monailabel`` are imported
only by MONAI Label's server, never by the core.
"""

from __future__ import annotations

from typing import Any

from medxfer.errors import ConfigError

__all__ = ["require_monailabel"]


def require_monailabel() -> Any:
    """Import ``monailabel`` or say how to install it.

    Raises:
        ConfigError: when the ``label`` extra is not installed.
    """
    try:
        import monailabel
    except ImportError:
        raise ConfigError('MONAI Label is not installed: pip install "medxfer[label]" '
                          "(see docs/monai-label.md)") from None
    return monailabel
