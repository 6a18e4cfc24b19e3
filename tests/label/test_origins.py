"""The origin guard in front of MONAI Label: other web pages get 403 and no CORS headers."""

from __future__ import annotations

import asyncio
import json

import pytest

from medxfer.errors import ConfigError
from medxfer.label.origins import OriginGuard, normalise_origin, own_origins


class _App:
    """An ASGI app that records the requests that reach it."""

    def __init__(self):
        self.seen = []

    async def __call__(self, scope, receive, send):
        self.seen.append(scope["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _call(guard, headers, kind="http"):
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": kind, "headers": [(k.lower().encode(), v.encode())
                                       for k, v in headers.items()]}
    asyncio.run(guard(scope, receive, send))
    return sent


def _guard(allowed=(), host="127.0.0.1"):
    return OriginGuard(_App(), allowed, host=host, port=8000)


def test_requests_without_origin_pass_and_other_origins_get_403():
    guard = _guard()
    assert _call(guard, {"host": "127.0.0.1:8000"})[0]["status"] == 200
    sent = _call(guard, {"host": "127.0.0.1:8000", "origin": "https://evil.example"})
    assert sent[0]["status"] == 403
    assert not any(k.startswith(b"access-control") for k, _ in sent[0]["headers"])
    assert "--allow-origin https://evil.example" in json.loads(sent[1]["body"])["detail"]
    assert guard.app.seen == ["http"]  # the refused request never reached MONAI Label
    assert _call(guard, {"origin": "null"})[0]["status"] == 403


def test_the_servers_own_page_and_allowed_origins_pass():
    guard = _guard(["HTTP://Viewer.Example:3000/"])
    for origin in ("http://viewer.example:3000", "http://127.0.0.1:8000",
                   "http://localhost:8000"):
        assert _call(guard, {"origin": origin})[0]["status"] == 200, origin
    assert _call(guard, {"origin": "http://viewer.example:3001"})[0]["status"] == 403
    assert _call(guard, {"origin": "http://127.0.0.1:9000"})[0]["status"] == 403


def test_a_loopback_server_answers_loopback_host_names_only():
    guard = _guard()
    for host in ("127.0.0.1:8000", "localhost:9000", "[::1]:8000", "localhost"):
        assert _call(guard, {"host": host})[0]["status"] == 200, host
    assert _call(guard, {"host": "evil.example:8000"})[0]["status"] == 403
    public = _guard(host="0.0.0.0")
    assert _call(public, {"host": "server.example:8000"})[0]["status"] == 200
    assert own_origins("0.0.0.0", 8000) == []


def test_websockets_from_other_origins_are_closed():
    sent = _call(_guard(), {"origin": "https://evil.example"}, kind="websocket")
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_lifespan_events_pass_through():
    guard = _guard()
    _call(guard, {}, kind="lifespan")
    assert guard.app.seen == ["lifespan"]


@pytest.mark.parametrize("url", ["viewer.example", "ftp://viewer.example",
                                 "http://viewer.example/app", "http://user@viewer.example"])
def test_allow_origin_must_be_a_web_origin(url):
    with pytest.raises(ConfigError, match="not a web origin"):
        normalise_origin(url)


def test_origins_are_normalised_as_browsers_send_them():
    assert normalise_origin("https://Viewer.Example:443/") == "https://viewer.example"
    assert normalise_origin("http://[::1]:8000") == "http://[::1]:8000"
