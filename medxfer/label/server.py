"""Starting MONAI Label's server on an app folder (``medxfer label serve``).

The server runs MONAI Label's app behind :class:`medxfer.label.origins.OriginGuard`
(``--uvicorn_app medxfer.label.asgi:app``): web pages from other origins are refused
unless allowed with ``--allow-origin``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Sequence

from medxfer.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
ASGI_APP = "medxfer.label.asgi:app"
#: How the origin guard learns its settings (read by :mod:`medxfer.label.asgi`).
ALLOW_ORIGINS_ENV = "MEDXFER_LABEL_ALLOW_ORIGINS"
HOST_ENV = "MEDXFER_LABEL_HOST"
PORT_ENV = "MEDXFER_LABEL_PORT"


def server_command(app_dir: Path, studies: Path, *, host: str = DEFAULT_HOST,
                   port: int = DEFAULT_PORT) -> list[str]:
    """The command that starts MONAI Label with this Python (its ``monailabel`` script
    runs whichever ``python`` is first on PATH, so it is not used)."""
    return [sys.executable, "-m", "monailabel.main", "start_server", "--app",
            str(Path(app_dir).resolve()), "--studies", str(Path(studies).resolve()),
            "--host", host, "--port", str(int(port)), "--uvicorn_app", ASGI_APP]


def server_env(*, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
               allow_origins: Sequence[str] = ()) -> dict[str, str]:
    """The server's environment: offline hub, no tasks that need a download or rescore
    every image after each request, and the origin guard's settings.

    Raises:
        ConfigError: for an ``allow_origins`` entry that is not a web origin.
    """
    from medxfer.label.origins import normalise_origin

    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")
    env[ALLOW_ORIGINS_ENV] = json.dumps([normalise_origin(o) for o in allow_origins])
    env[HOST_ENV], env[PORT_ENV] = host, str(int(port))
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
          port: int = DEFAULT_PORT, allow_origins: Sequence[str] = ()) -> None:
    """Replace this process with MONAI Label's server (signals such as Ctrl-C reach it).

    Args:
        app_dir: The app folder.
        studies: The datastore folder.
        host: Address to listen on.
        port: Port to listen on.
        allow_origins: Web origins (``scheme://host:port``) whose pages may call the server.

    Raises:
        ConfigError: when MONAI Label is not installed, ``studies`` is not a folder or an
            origin is malformed.
    """
    from medxfer.label import require_monailabel

    require_monailabel()
    env = server_env(host=host, port=port, allow_origins=allow_origins)
    command = server_command(app_dir, check_studies(studies), host=host, port=port)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)
