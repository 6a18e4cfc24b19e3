"""Run a MONAI bundle with MONAI's ConfigWorkflow in a process where medxfer cannot be
imported (a script, started by the tests with ``python -I``).

    python -I bundle_runner.py infer BUNDLE IMAGES OUT
    python -I bundle_runner.py train BUNDLE DATA EPOCHS

Prints one JSON line: the properties ConfigWorkflow found missing, the seconds it took, and
whether ``import medxfer`` failed.
"""

from __future__ import annotations

import importlib.abc
import json
import sys
import time


class _NoMedxfer(importlib.abc.MetaPathFinder):
    """Refuses every ``medxfer`` module, wherever an installed copy would come from."""

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102 - importlib's API
        if fullname.split(".")[0] in ("medxfer", "medxfer_plugins"):
            raise ImportError(f"{fullname} is blocked: the bundle must run without medxfer")
        return None


def main(mode: str, bundle: str, data: str, last: str) -> None:
    sys.meta_path.insert(0, _NoMedxfer())
    try:
        import medxfer  # noqa: F401
        blocked = False
    except ImportError:
        blocked = True
    from monai.bundle import ConfigWorkflow

    start = time.perf_counter()
    config = f"{bundle}/configs/{'inference' if mode == 'infer' else 'train'}.json"
    extra = {"output_dir": last} if mode == "infer" else {"train#trainer#max_epochs": int(last)}
    workflow = ConfigWorkflow(config_file=config, meta_file=f"{bundle}/configs/metadata.json",
                              logging_file=f"{bundle}/configs/logging.conf",
                              workflow_type=mode, bundle_root=bundle, dataset_dir=data, **extra)
    workflow.initialize()
    missing = workflow.check_properties()
    workflow.run()
    workflow.finalize()
    print(json.dumps({"missing": missing, "seconds": time.perf_counter() - start,
                      "medxfer_blocked": blocked,
                      "medxfer_loaded": any(m.split(".")[0] == "medxfer" for m in sys.modules)}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
