"""Rate limit and daily token budget, shared by two gateway instances on one nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import nats
import pytest
import uvicorn
import websockets
from minutes import early_in_a_minute
from nats.js import JetStreamContext
from tcpproxy import Proxy

from contracts import ids, rpc, subjects, topology
from contracts.events import Usage, UsageReported
from contracts.topology import rate_key
from devstack.ports import free_port
from gateway import GatewaySettings
from gateway.intake.limits import FallbackCounter, KvCounter, RedisCounter
from gateway.server import uvicorn_config
from usage import UsageSettings
from usage import create_app as create_usage_app

TIMEOUT = 30.0
Counts = Callable[[], Awaitable[dict[str, int]]]


async def _serve(settings: GatewaySettings) -> AsyncGenerator[str, None]:
    server = uvicorn.Server(uvicorn_config(settings))
    server.config.log_level = "warning"
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the gateway did not start"
        await asyncio.sleep(0.025)
    try:
        yield f"http://{settings.http_host}:{settings.http_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _two_gateways(settings: GatewaySettings, **limits: int) -> AsyncIterator[list[str]]:
    urls = []
    servers = []
    for _ in range(2):
        own = settings.model_copy(update={"http_port": free_port(), **limits})
        server = _serve(own)
        urls.append(await anext(server))
        servers.append(server)
    try:
        yield urls
    finally:
        for server in servers:
            await server.aclose()


@pytest.fixture
async def rate_limited(settings: GatewaySettings, nc: object) -> AsyncIterator[list[str]]:
    async for urls in _two_gateways(settings, rate_limit_per_minute=3):
        yield urls


@pytest.fixture
async def budgeted(settings: GatewaySettings, nc: object) -> AsyncIterator[list[str]]:
    async for urls in _two_gateways(settings, daily_token_budget=1000):
        yield urls


async def _send(url: str, content: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
        return await client.post("/v1/conversations/lim/messages", json={"content": content})


async def test_the_rate_limit_counts_messages_through_every_gateway(
    rate_limited: list[str], worker: object, counts: Counts
) -> None:
    first, second = rate_limited
    await early_in_a_minute()
    for url in (first, second, first):
        assert (await _send(url, "hello")).status_code == 200
    before = await counts()

    refused = await _send(second, "one too many")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "3 messages per minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert await counts() == before  # nothing was published


async def test_a_websocket_message_over_the_rate_limit_gets_an_error_frame(
    rate_limited: list[str], worker: object, counts: Counts
) -> None:
    first, second = rate_limited
    await early_in_a_minute()
    for url in (first, second, first):
        assert (await _send(url, "hello")).status_code == 200
    before = await counts()
    ws_url = second.replace("http://", "ws://") + "/v1/ws"
    async with websockets.connect(ws_url) as ws:
        frame = {"type": "message", "conversation_id": "lim", "content": "more"}
        await ws.send(json.dumps(frame))
        answer = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert answer["type"] == "error"
        assert answer["code"] == "rate_limited"
        await ws.send(json.dumps({"type": "ping"}))  # the socket stays open
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "pong"
    assert await counts() == before


@pytest.fixture
async def usage_service(nats_url: str, tmp_path: Path) -> AsyncIterator[None]:
    app = create_usage_app(UsageSettings(nats_url=nats_url, data_dir=tmp_path / "usage"))
    await app.start()
    try:
        yield
    finally:
        await app.stop()


async def _spend(js: JetStreamContext, tokens: int) -> None:
    message_id = ids.new_id()
    event = UsageReported(
        attempt_id=ids.attempt_id(message_id, 1, 0),
        message_id=message_id,
        conversation_id="lim",
        user_id="local",
        model="demo",
        provider="demo",
        provider_model="demo",
        usage=Usage.of(tokens // 2, tokens - tokens // 2),
        outcome="completed",
        duration_ms=10.0,
        occurred_at=datetime.now(UTC),
    )
    await js.publish(
        subjects.usage_reported(event.conversation_id, event.message_id),
        event.model_dump_json().encode(),
    )


async def test_the_daily_budget_spent_through_usage_stops_every_gateway(
    budgeted: list[str], usage_service: None, worker: object, js: JetStreamContext, counts: Counts
) -> None:
    first, second = budgeted
    await _spend(js, 600)
    # Under the budget, whatever the usage service has recorded so far.
    assert (await _send(first, "hello")).status_code == 200
    await _spend(js, 400)  # 1000 of 1000 spent today

    deadline = time.monotonic() + TIMEOUT
    while (refused := await _send(second, "over")).status_code == 200:
        assert time.monotonic() < deadline, "the budget was never enforced"
        await asyncio.sleep(0.1)
    before = await counts()
    again = await _send(first, "over")

    for response in (refused, again):
        assert response.status_code == 429
        error = response.json()["error"]
        assert error["code"] == "budget_exceeded"
        assert "1000 tokens" in error["message"]
        assert 1 <= int(response.headers["Retry-After"]) <= 86400
    assert await counts() == before


@pytest.fixture
async def redis_limited(
    settings: GatewaySettings, nc: object, redis_url: str
) -> AsyncIterator[list[str]]:
    import redis.asyncio as redis

    await early_in_a_minute()
    client = redis.from_url(redis_url)
    minute = int(time.time() // 60)
    # Counters of an earlier run in this minute must not count.
    await client.delete(*(f"livechat:rate:{rate_key('local', m)}" for m in (minute, minute + 1)))
    await client.aclose()
    async for urls in _two_gateways(settings, rate_limit_per_minute=2, redis_url=redis_url):
        yield urls


@pytest.mark.redis
async def test_with_redis_the_rate_limit_is_counted_in_redis(
    redis_limited: list[str], worker: object, counts: Counts, js: JetStreamContext
) -> None:
    first, second = redis_limited
    for url in (first, second):
        assert (await _send(url, "hello")).status_code == 200
    before = await counts()

    refused = await _send(first, "one too many")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert await counts() == before
    # Nothing was counted in the NATS bucket: Redis holds the counters.
    rate = await js.key_value(topology.RATE_BUCKET)
    with pytest.raises(nats.js.errors.NotFoundError):
        await rate.get(rate_key("local", int(time.time() // 60)))


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[tuple[Proxy, str]]:
    """Redis behind a TCP proxy the test can stop: (the proxy, its redis URL)."""
    import redis.asyncio as redis

    target = urlsplit(redis_url)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    await early_in_a_minute()
    client = redis.from_url(redis_url)
    minute = int(time.time() // 60)
    await client.delete(*(f"livechat:rate:{rate_key('local', m)}" for m in (minute, minute + 1)))
    await client.aclose()
    database = target.path.lstrip("/") or "0"
    try:
        yield proxy, f"redis://127.0.0.1:{proxy.port}/{database}"
    finally:
        with contextlib.suppress(AssertionError):
            await proxy.stop()


@pytest.mark.redis
async def test_when_redis_fails_the_rate_limit_is_counted_in_nats(
    redis_proxy: tuple[Proxy, str],
    settings: GatewaySettings,
    nc: object,
    worker: object,
    js: JetStreamContext,
) -> None:
    proxy, url = redis_proxy
    async for [first, _] in _two_gateways(settings, rate_limit_per_minute=2, redis_url=url):
        assert (await _send(first, "through redis")).status_code == 200
        await proxy.stop()

        during = [await _send(first, "redis is down") for _ in range(2)]
        refused = await _send(first, "one too many")

    # Not a 503 for everyone: the bucket counts, from what came while Redis was down.
    assert [r.status_code for r in during] == [200, 200]
    assert refused.status_code == 429
    rate = await js.key_value(topology.RATE_BUCKET)
    entry = await rate.get(rate_key("local", int(time.time() // 60)))
    assert entry.value == b"3"


@pytest.mark.redis
async def test_the_fallback_counter_goes_back_to_redis(
    redis_proxy: tuple[Proxy, str], js: JetStreamContext, redis_url: str
) -> None:
    import redis.asyncio as redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    proxy, url = redis_proxy
    await topology.ensure_buckets(js)
    now = [0.0]
    no_retry = Retry(NoBackoff(), 0)
    client = redis.from_url(url, socket_timeout=1, socket_connect_timeout=1, retry=no_retry)
    counter = FallbackCounter(
        RedisCounter(client),
        KvCounter(await js.key_value(topology.RATE_BUCKET)),
        retry_seconds=10,
        clock=lambda: now[0],
    )
    key = rate_key("local", int(time.time() // 60))
    try:
        assert await counter.incr(key) == 1  # Redis
        await proxy.stop()
        assert await counter.incr(key) == 1  # the bucket's own count
        assert await counter.incr(key) == 2
        await proxy.start()
        now[0] = 5.0
        assert await counter.incr(key) == 3  # not yet tried again: the bucket
        now[0] = 11.0
        assert await counter.incr(key) == 2  # Redis again, its count went on
    finally:
        await counter.aclose()
    direct = redis.from_url(redis_url)
    assert int(await direct.get(f"livechat:rate:{key}")) == 2
    await direct.aclose()


async def test_a_retried_message_id_is_counted_once(
    gateway_server: Any, backends: Any, worker: object
) -> None:
    async with gateway_server(rate_limit_per_minute=1) as url:
        await early_in_a_minute()
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as client:
            path = "/v1/conversations/retried/messages"
            first = await client.post(path, json={"content": "hello", "id": "m-1"})
            assert first.status_code == 200
            # Memory holds it now (the retry may come after the dedupe window).
            stored = first.json()["message"]
            backends.add_conversation(
                "retried",
                (
                    rpc.StoredMessage(
                        id="m-1",
                        role="user",
                        content="hello",
                        status="complete",
                        created_at=stored["created_at"],
                    ),
                    rpc.StoredMessage.model_validate(stored),
                ),
            )
            again = await client.post(path, json={"content": "hello", "id": "m-1"})
            new = await client.post(path, json={"content": "another", "id": "m-2"})
    assert again.status_code == 200
    assert again.json()["message"]["content"] == stored["content"]
    assert new.status_code == 429
