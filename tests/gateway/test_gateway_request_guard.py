"""Cross-site writes and DNS rebinding against a local gateway (auth off, as `make dev`):
a body must be declared JSON (415), a foreign `Origin` is refused (403
origin_not_allowed), and with auth off a `Host` that is not this machine's or listed in
LIVECHAT_ALLOWED_HOSTS is refused (403 host_not_allowed). Nothing refused is published."""

from __future__ import annotations

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from gateway.access.guard import host_name

EVIL = "https://evil.example"
NOTHING = {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}


def error_code(response: httpx.Response) -> str:
    code: str = response.json()["error"]["code"]
    return code


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        # What `fetch(url, {mode: "no-cors", body: new Blob([json])})` sends.
        ("/v1/conversations/x1/messages", None),
        ("/v1/conversations/x1/messages", "text/plain;charset=UTF-8"),
        ("/v1/conversations/x1/cancel", "text/plain"),
        ("/v1/conversations", "application/x-www-form-urlencoded"),
        ("/api/chat", None),
        ("/v1/chat/completions", "text/plain"),
    ],
)
async def test_a_body_not_declared_as_json_is_415_and_publishes_nothing(
    gateway_url, counts, path, content_type
):
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post(path, content=b'{"content": "hi"}', headers=headers)
    assert response.status_code == 415, response.text
    assert error_code(response) == "unsupported_media_type"
    assert await counts() == NOTHING


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/conversations/x2/messages", {"content": "planted"}),
        ("POST", "/v1/conversations/x2/cancel", None),
        ("GET", "/v1/conversations", None),
        ("GET", "/v1/usage", None),
        ("POST", "/v1/chat/completions", {"model": "demo", "messages": []}),
    ],
)
async def test_another_sites_origin_is_403_and_publishes_nothing(
    gateway_url, backends, counts, method, path, body
):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.request(method, path, json=body, headers={"Origin": EVIL})
    assert response.status_code == 403, response.text
    assert error_code(response) == "origin_not_allowed"
    assert await counts() == NOTHING


async def test_the_gateways_own_page_and_listed_origins_are_served(
    gateway_url, gateway_server, backends, worker
):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        same = await client.get("/v1/conversations", headers={"Origin": gateway_url})
        sent = await client.post(
            "/v1/conversations/x3/messages", json={"content": "hi"}, headers={"Origin": gateway_url}
        )
    assert same.status_code == 200
    assert sent.status_code == 200 and sent.json()["message"]["content"] == "echo: hi"
    async with (
        gateway_server(allowed_origins=(EVIL,)) as listed,
        httpx.AsyncClient(base_url=listed, timeout=30) as client,
    ):
        response = await client.get("/v1/conversations", headers={"Origin": EVIL})
        other = await client.get("/v1/conversations", headers={"Origin": "https://other.example"})
    assert response.status_code == 200
    assert other.status_code == 403 and error_code(other) == "origin_not_allowed"


@pytest.mark.parametrize("path", ["/v1/conversations", "/v1/usage", "/healthz", "/"])
async def test_with_auth_off_a_rebound_host_reads_nothing(gateway_url, backends, path):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.get(path, headers={"Host": "evil.example:8000"})
    assert response.status_code == 403, response.text
    assert error_code(response) == "host_not_allowed"


async def test_with_auth_off_a_rebound_host_cannot_post(gateway_url, counts):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post(
            "/v1/conversations/x4/messages",
            json={"content": "planted"},
            headers={"Host": "evil.example:8000", "Origin": "http://evil.example:8000"},
        )
    assert response.status_code == 403
    assert error_code(response) == "host_not_allowed"
    assert await counts() == NOTHING


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:9999", "LOCALHOST"])
async def test_loopback_hosts_are_served_with_any_port(gateway_url, backends, host):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.get("/v1/conversations", headers={"Host": host})
    assert response.status_code == 200, response.text


async def test_listed_hosts_are_served_and_auth_on_serves_any_host(gateway_server, backends):
    headers = {"Host": "chat.internal:8000"}
    async with (
        gateway_server(allowed_hosts=("chat.internal",)) as listed,
        httpx.AsyncClient(base_url=listed, timeout=30) as client,
    ):
        assert (await client.get("/v1/conversations", headers=headers)).status_code == 200
        other = await client.get("/v1/conversations", headers={"Host": "other.internal"})
        assert other.status_code == 403
    async with (
        gateway_server(api_keys={"key-1": "alice"}) as authed,
        httpx.AsyncClient(base_url=authed, timeout=30) as client,
    ):
        response = await client.get(
            "/v1/conversations", headers={"Host": "chat.example.com", "X-API-Key": "key-1"}
        )
        assert response.status_code == 200, response.text


async def test_a_websocket_through_a_rebound_host_is_refused(gateway_url):
    port = httpx.URL(gateway_url).port
    # The name the page used (rebound to 127.0.0.1) is in the URL, so in the Host header.
    url = f"ws://evil.example:{port}/v1/ws"
    with pytest.raises(InvalidStatus) as caught:
        async with websockets.connect(url, host="127.0.0.1", port=port):
            pass
    assert caught.value.response.status_code == 403
    assert b"host_not_allowed" in caught.value.response.body


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("localhost:8000", "localhost"),
        ("[::1]:8000", "::1"),
        ("Example.COM", "example.com"),
        ("a:b:c", None),
        ("host:port", None),
        ("", None),
    ],
)
def test_host_name(header: str, name: str | None) -> None:
    assert host_name(header) == name
