"""The Origin allowlist (LIVECHAT_ALLOWED_ORIGINS) on WebSocket handshakes and CORS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
import websockets
from nats.aio.client import Client
from websockets.exceptions import InvalidStatus

from devstack.ports import free_port
from gateway import GatewaySettings
from gateway.access.origins import OriginPolicy, normalize_origin
from gateway.server import uvicorn_config

APP = "https://app.example"


def ws_url(gateway_url: str) -> str:
    return gateway_url.replace("http://", "ws://") + "/v1/ws"


async def pong(url: str, origin: str | None) -> dict[str, object]:
    kwargs = {"origin": origin} if origin is not None else {}
    async with websockets.connect(ws_url(url), **kwargs) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "ping"}))
        answer: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 20))
        return answer


async def refused(url: str, origin: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        async with websockets.connect(ws_url(url), origin=origin):  # type: ignore[arg-type]
            pass
    return caught.value


@pytest.fixture
async def allowlisted_url(settings: GatewaySettings, nc: Client) -> AsyncIterator[str]:
    """A gateway with LIVECHAT_ALLOWED_ORIGINS set to one other site."""
    config = settings.model_copy(update={"http_port": free_port(), "allowed_origins": (APP,)})
    server = uvicorn.Server(uvicorn_config(config))
    server.config.log_level = "warning"
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started or task.done():
            break
        await asyncio.sleep(0.025)
    assert server.started
    try:
        yield f"http://{config.http_host}:{config.http_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def test_unset_allows_same_origin_and_clients_without_origin(gateway_url):
    assert await pong(gateway_url, None) == {"type": "pong"}
    assert await pong(gateway_url, gateway_url) == {"type": "pong"}  # the gateway's own page


async def test_unset_refuses_another_site_with_403_before_accept(gateway_url):
    error = await refused(gateway_url, "http://evil.example")
    assert error.response.status_code == 403
    body = json.loads(error.response.body or b"{}")
    assert body["error"]["code"] == "origin_not_allowed"
    # Same host name, another port: another origin.
    port = int(gateway_url.rsplit(":", 1)[1])
    other = await refused(gateway_url, f"http://127.0.0.1:{port + 1}")
    assert other.response.status_code == 403


async def test_allowlist_admits_listed_origins_only(allowlisted_url):
    assert await pong(allowlisted_url, APP) == {"type": "pong"}
    assert await pong(allowlisted_url, APP.upper() + "/") == {"type": "pong"}
    assert await pong(allowlisted_url, None) == {"type": "pong"}
    assert (await refused(allowlisted_url, "https://evil.example")).response.status_code == 403
    assert (await refused(allowlisted_url, "http://app.example")).response.status_code == 403


async def test_cors_answers_listed_origins_when_set(allowlisted_url):
    async with httpx.AsyncClient(base_url=allowlisted_url) as http:
        preflight = await http.options(
            "/v1/conversations",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "POST" in preflight.headers["access-control-allow-methods"]

        health = await http.get("/healthz", headers={"Origin": APP})
        assert health.status_code == 200
        assert health.headers["access-control-allow-origin"] == APP

        evil = await http.options(
            "/v1/conversations",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert evil.status_code == 400
        assert "access-control-allow-origin" not in evil.headers
        plain = await http.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in plain.headers


async def test_no_cors_headers_when_unset(gateway_url):
    async with httpx.AsyncClient(base_url=gateway_url) as http:
        health = await http.get("/healthz", headers={"Origin": APP})
        assert health.status_code == 403  # an origin not allowed is refused outright
        assert health.json()["error"]["code"] == "origin_not_allowed"
        assert "access-control-allow-origin" not in health.headers


@pytest.mark.parametrize(
    ("allowed", "origin", "host", "ok"),
    [
        (None, None, "gw.example", True),
        (None, "https://gw.example", "gw.example", True),
        (None, "https://gw.example", "gw.example:443", True),
        (None, "http://gw.example:8000", "gw.example:8000", True),
        (None, "http://gw.example:8000", "gw.example:8001", False),
        (None, "https://evil.example", "gw.example", False),
        (None, "null", "gw.example", False),
        (None, "not a url", "gw.example", False),
        ((APP,), "https://app.example:443", "gw.example", True),
        ((APP,), "https://app.example.evil.example", "gw.example", False),
        (("*",), "https://anything.example", "gw.example", True),
        (("null",), "null", "gw.example", True),
    ],
)
def test_origin_policy(allowed, origin, host, ok):
    assert OriginPolicy(allowed, own_hosts=("gw.example",)).allows(origin, host) is ok


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        # DNS rebinding: the attacker's name points at the gateway; Origin matches Host.
        ("http://evil.example:8000", "evil.example:8000", False),
        ("http://localhost:8000", "localhost:8000", True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://chat.internal:8000", "chat.internal:8000", True),  # LIVECHAT_HTTP_HOST
    ],
)
def test_same_origin_counts_only_on_the_gateways_own_hosts(origin, host, ok):
    policy = OriginPolicy(None, own_hosts=("chat.internal", "0.0.0.0"))
    assert policy.allows(origin, host) is ok


def test_normalize_origin():
    assert normalize_origin("HTTPS://App.Example:443/") == "https://app.example"
    assert normalize_origin("http://[::1]:8000") == "http://[::1]:8000"
