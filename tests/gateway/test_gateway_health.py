"""Health, readiness, metrics, history and usage routes; `python -m gateway`."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import httpx

from contracts import rpc, topology
from devstack.ports import free_port


async def test_healthz(gateway_url):
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_503_without_backends_and_200_with(gateway_url, start_backends):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        body = response.json()
        assert body["error"]["code"] == "not_ready"
        assert "inference" in body["error"]["message"]
        assert body["checks"] == {
            "nats": True,
            "events_stream": True,
            "inference": False,
            "memory": False,
            "usage": False,
        }
        await start_backends(("inference", "usage"))
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "not answering: memory"
        await start_backends(("memory",))
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_readyz_is_503_while_the_events_stream_is_missing(gateway_url, backends, js):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        assert (await client.get("/readyz")).status_code == 200
        # As after a NATS restart, before any service recreated the memory stream.
        await js.delete_stream(topology.EVENTS_STREAM)
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["events_stream"] is False
    assert response.json()["error"]["message"] == "not answering: events_stream"


async def test_history_and_usage_from_the_backends(gateway_url, backends):
    backends.add_conversation(
        "h1",
        (
            rpc.StoredMessage(
                id="m1",
                role="user",
                content="hi",
                status="complete",
                created_at="2025-01-01T00:00:00Z",
            ),
        ),
    )
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        listing = await client.get("/v1/conversations", params={"q": "hel"})
        one = await client.get("/v1/conversations/h1")
        missing = await client.get("/v1/conversations/nope")
        bad = await client.get("/v1/conversations/bad.id")
        usage = await client.get("/v1/usage")
    assert listing.status_code == 200
    [conversation] = listing.json()["conversations"]
    assert conversation["id"] == "h1"
    assert set(conversation) == {
        "id",
        "title",
        "created_at",
        "updated_at",
        "message_count",
        "total_tokens",
    }
    assert backends.list_requests[0].q == "hel"
    assert backends.list_requests[0].user_id == "local"
    assert one.status_code == 200
    assert one.json()["messages"][0]["content"] == "hi"
    assert "schema_version" not in one.json()["messages"][0]
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert bad.status_code == 400
    assert usage.status_code == 200
    assert usage.json()["totals"]["total_tokens"] == 16
    assert usage.json()["by_model"]["demo"]["requests"] == 2


async def test_backend_that_does_not_answer_is_503(gateway_url):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        for path in ("/v1/conversations", "/v1/conversations/x", "/v1/usage"):
            response = await client.get(path)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "service_unavailable"


async def test_unknown_route_and_method_use_the_error_shape(gateway_url):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        missing = await client.get("/nope")
        method = await client.delete("/healthz")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert method.status_code == 405
    assert method.json()["error"]["code"] == "method_not_allowed"


async def test_metrics_count_requests_and_relayed_events(gateway_url, worker):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        await client.post("/v1/conversations/mt/messages", json={"content": "m"})
        response = await client.get("/metrics")
    assert response.status_code == 200
    text = response.text
    assert 'livechat_gateway_requests_total{method="POST",status="200"} 1.0' in text
    assert 'livechat_gateway_events_relayed_total{transport="json"}' in text
    assert "livechat_gateway_active_streams" in text


async def test_python_m_gateway_serves_and_exits_cleanly_on_sigterm(nats_url):
    port = free_port()
    env = {
        **os.environ,
        "LIVECHAT_NATS_URL": nats_url,
        "LIVECHAT_HTTP_PORT": str(port),
        "LIVECHAT_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(200):
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
