"""The ASGI app ``medxfer label serve`` runs: MONAI Label's, behind :class:`OriginGuard`.

MONAI Label starts it as ``--uvicorn_app medxfer.label.asgi:app``; the allowed origins and
the address come from the environment :func:`medxfer.label.server.server_env` sets.
"""

from __future__ import annotations

import json
import os

from monailabel.app import app as monailabel_app

from medxfer.label.origins import OriginGuard
from medxfer.label.server import ALLOW_ORIGINS_ENV, DEFAULT_HOST, DEFAULT_PORT, HOST_ENV, PORT_ENV

app = OriginGuard(monailabel_app, json.loads(os.environ.get(ALLOW_ORIGINS_ENV) or "[]"),
                  host=os.environ.get(HOST_ENV, DEFAULT_HOST),
                  port=int(os.environ.get(PORT_ENV, str(DEFAULT_PORT))))
# MONAI Label has printed "Allow Origins: ['*']" above; this is what holds.
print(f"medxfer: web pages may call this server only from {sorted(app.allowed) or 'nowhere'}"
      " (medxfer label serve --allow-origin URL adds one)", flush=True)
