"""Starting MONAI Label's server on an app folder (``medxfer label serve``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from medxfer.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def server_command(app_dir: Path, studies: Path, *, host: str = DEFAULT_HOST,
                   port: int = DEFAULT_PORT) -> list[str]:
    """The command that starts MONAI Label with this Python (its ``monailabel`` script
    runs whichever ``python`` is first on PATH, so it is not used)."""
    return [sys.executable, "-m", "monailabel.main", "start_server", "--app",
            str(Path(app_dir).resolve()), "--studies", str(Path(studies).resolve()),
            "--host", host, "--port", str(int(port))]


def server_env() -> dict[str, str]:
    """The server's environment: offline hub, no tasks that need a download."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")
    return env


def check_studies(studies: Path) -> Path:
    """The datastore folder, which must exist.

    Raises:
        ConfigError: when it does not.
    """
    studies = Path(studies).expanduser()
    if not studies.is_dir():
        raise ConfigError(f"--studies {str(studies)!r} is not a folder; pass the folder of "
                          "images (NIfTI, NRRD, DICOM) to annotate")
    return studies


def serve(app_dir: Path, studies: Path, *, host: str = DEFAULT_HOST,
          port: int = DEFAULT_PORT) -> None:
    """Replace this process with MONAI Label's server (signals such as Ctrl-C reach it).

    Raises:
        ConfigError: when MONAI Label is not installed or ``studies`` is not a folder.
    """
    from medxfer.label import require_monailabel

    require_monailabel()
    command = server_command(app_dir, check_studies(studies), host=host, port=port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, server_env())
