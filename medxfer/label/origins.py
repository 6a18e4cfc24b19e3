"""Closing the MONAI Label server to other web pages (an ASGI wrapper around its app).

MONAI Label 0.8.5 allows every origin with credentials (``allow_origins=["*"]``), so any
web page a user opens could run inference, write or delete labels and start training on
the server. Its own allow-list (``MONAI_LABEL_CORS_ORIGINS``) cannot help: pydantic
stores ``http://host:port`` as ``http://host:port/``, which never equals a browser's
``Origin`` header. :class:`OriginGuard` therefore answers 403 to every request that
carries an ``Origin`` other than the server's own address or one the user allowed
(``medxfer label serve --allow-origin URL``), before MONAI Label sees it: no CORS
allowance is given, and a "simple" cross-site POST (which a browser sends without asking
first) is not executed either. Clients that are not browsers (3D Slicer, curl, Python)
send no ``Origin`` and are not affected.

On a loopback address it also refuses a ``Host`` header that is not a loopback name, so a
page that re-points its own host name at 127.0.0.1 (DNS rebinding) cannot read from the
server as a same-origin page.
"""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import urlsplit

from medxfer.errors import ConfigError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def normalise_origin(url: str) -> str:
    """``scheme://host[:port]`` in lower case, as browsers send ``Origin``.

    Raises:
        ConfigError: for anything but an http(s) origin without a path.
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or \
            parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"--allow-origin {url!r} is not a web origin; give scheme, host and "
                          "port only, e.g. http://viewer.example:3000")
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    default = {"http": 80, "https": 443}[parts.scheme]
    port = "" if parts.port in (None, default) else f":{parts.port}"
    return f"{parts.scheme}://{host}{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to listen on) is a loopback address or name."""
    return host in LOOPBACK_NAMES or host.startswith("127.")


def own_origins(host: str, port: int) -> list[str]:
    """The origins of pages the server itself serves (its API page), by the names a
    browser may use for it: every loopback name when it listens on loopback, else the
    address it listens on (none for ``0.0.0.0``: pass the names with ``--allow-origin``)."""
    if is_loopback(host):
        names = ["127.0.0.1", "localhost", "[::1]"]
    elif host in ("0.0.0.0", "::", ""):
        names = []
    else:
        names = [f"[{host}]" if ":" in host else host]
    return [f"http://{name}:{int(port)}" for name in names]


class OriginGuard:
    """ASGI middleware: 403 for requests from origins not allowed (see module docstring).

    Args:
        app: The wrapped ASGI app (MONAI Label's).
        allowed: Origins allowed besides the server's own.
        host: The address the server listens on.
        port: Its port.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], allowed: Iterable[str], *,
                 host: str, port: int) -> None:
        self.app = app
        self.allowed = {normalise_origin(o) for o in allowed} | set(own_origins(host, port))
        self.check_host = is_loopback(host)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope.get("headers", [])}
            refusal = self.refusal(headers.get("origin"), headers.get("host"))
            if refusal is not None:
                await _forbidden(scope, receive, send, refusal)
                return
        await self.app(scope, receive, send)

    def refusal(self, origin: str | None, host: str | None) -> str | None:
        """Why a request with these headers is refused, or ``None`` to let it through."""
        if self.check_host and host is not None and _host_name(host) not in LOOPBACK_NAMES:
            return (f"host {host!r} refused: this server listens on loopback and answers "
                    "only to 127.0.0.1, localhost or [::1]")
        if origin is None:
            return None
        try:
            if normalise_origin(origin) in self.allowed:
                return None
        except ConfigError:
            pass
        return (f"cross-origin request from {origin!r} refused; to allow a web viewer at that "
                "address, start the server with `medxfer label serve --allow-origin "
                f"{origin}`")


def _host_name(host: str) -> str:
    """The name part of a ``Host`` header (``[::1]:8000`` -> ``[::1]``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _forbidden(scope: Scope, receive: Receive, send: Send, detail: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
