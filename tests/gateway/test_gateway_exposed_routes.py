"""What the HTTP port shows beside the API: /metrics on its own port or, with auth on,
only with LIVECHAT_METRICS_TOKEN; /docs and /openapi.json off with auth on unless
LIVECHAT_DOCS_ENABLED says otherwise."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from devstack.ports import free_port

KEYS = {"key-1": "alice"}


async def test_with_auth_on_metrics_and_docs_are_not_open(gateway_server):
    async with (
        gateway_server(api_keys=KEYS) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        metrics = await client.get("/metrics")
        user = await client.get("/metrics", headers={"X-API-Key": "key-1"})
        docs = await client.get("/docs")
        schema = await client.get("/openapi.json")
    assert metrics.status_code == user.status_code == 404
    assert "LIVECHAT_METRICS_TOKEN" in metrics.json()["error"]["message"]
    assert "livechat_gateway" not in metrics.text + user.text
    assert docs.status_code == schema.status_code == 404
    assert "paths" not in schema.text


async def test_with_auth_on_metrics_need_the_metrics_token(gateway_server):
    async with (
        gateway_server(api_keys=KEYS, metrics_token=SecretStr("m" * 32)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer key-1"})
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {'m' * 32}"})
    assert anonymous.status_code == wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"
    assert right.status_code == 200
    assert "livechat_gateway_requests_total" in right.text


async def test_docs_can_be_turned_on_with_auth_and_off_without(gateway_server):
    async with (
        gateway_server(api_keys=KEYS, docs_enabled=True) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        assert (await client.get("/openapi.json")).json()["paths"]
        assert (await client.get("/docs")).status_code == 200
    async with (
        gateway_server(docs_enabled=False) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        assert (await client.get("/openapi.json")).status_code == 404
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/metrics")).status_code == 200  # auth off: open


async def test_metrics_on_their_own_port_leave_the_http_port(gateway_server):
    port = free_port()
    async with (
        gateway_server(api_keys=KEYS, metrics_port=port) as url,
        httpx.AsyncClient(timeout=30) as client,
    ):
        await client.get(f"{url}/healthz")
        public = await client.get(f"{url}/metrics")
        own = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert public.status_code == 404
    assert own.status_code == 200
    assert 'livechat_gateway_requests_total{method="GET",status="200"}' in own.text
