"""GET /v1/usage and /v1/usage/export through a real gateway, nats-server and usage service."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from nats.js import JetStreamContext

from contracts import ids, subjects, topology
from contracts.events import Usage, UsageReported
from usage import UsageSettings
from usage import create_app as create_usage_app
from usage.prices import Price

TIMEOUT = 30.0
NOW = datetime.now(UTC)


def reported(
    *,
    user_id: str = "local",
    model: str = "demo",
    provider: str = "demo",
    provider_model: str = "demo-1",
    conversation_id: str = "conv-1",
    prompt: int = 10,
    completion: int = 20,
    occurred_at: datetime = NOW,
    outcome: str = "completed",
) -> UsageReported:
    message_id = ids.new_id()
    return UsageReported(
        attempt_id=ids.attempt_id(message_id, 1, 0),
        message_id=message_id,
        conversation_id=conversation_id,
        user_id=user_id,
        model=model,
        provider=provider,
        provider_model=provider_model,
        usage=Usage.of(prompt, completion),
        outcome=outcome,
        time_to_first_token_ms=5.0,
        duration_ms=50.0,
        occurred_at=occurred_at,
    )


@pytest.fixture
async def usage_service(nats_url: str, tmp_path: Path, nc: object) -> AsyncIterator[None]:
    settings = UsageSettings(
        nats_url=nats_url,
        data_dir=tmp_path / "usage",
        prices={"llama-3.1-8b-instant": Price(input=0.05, output=0.08)},
    )
    app = create_usage_app(settings)
    await app.start()
    try:
        yield
    finally:
        await app.stop()


Publish = Callable[[list[UsageReported]], Awaitable[None]]


@pytest.fixture
def publish(js: JetStreamContext) -> Publish:
    """Publish reports as the workers do, and wait until usage has recorded them all."""

    async def run(events: list[UsageReported]) -> None:
        last = 0
        for event in events:
            ack = await js.publish(
                subjects.usage_reported(event.conversation_id, event.message_id),
                event.model_dump_json().encode(),
                headers={"Nats-Msg-Id": ids.msg_id("usage", event.attempt_id)},
            )
            last = ack.seq
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
            if info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= last:
                return
            assert asyncio.get_running_loop().time() < deadline, "reports not recorded"
            await asyncio.sleep(0.05)

    return run


def _totals(requests: int, prompt: int, completion: int) -> dict[str, int]:
    return {
        "requests": requests,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


async def test_usage_is_the_callers_sum_by_model_and_by_group(
    gateway_url: str, usage_service: None, publish: Publish
) -> None:
    await publish(
        [
            reported(prompt=3, completion=5),
            reported(prompt=7, completion=11, conversation_id="conv-2"),
            reported(
                model="groq-llama-8b",
                provider="groq",
                provider_model="llama-3.1-8b-instant",
                prompt=1_000_000,
                completion=500_000,
            ),
            reported(user_id="bob", prompt=100, completion=100),  # someone else's
        ]
    )
    async with httpx.AsyncClient(base_url=gateway_url, timeout=TIMEOUT) as client:
        plain = (await client.get("/v1/usage")).json()
        by_provider = (await client.get("/v1/usage", params={"group_by": "provider"})).json()
        by_conv = (await client.get("/v1/usage", params={"group_by": "conversation"})).json()

    demo = _totals(2, 10, 16)
    groq = _totals(1, 1_000_000, 500_000)
    assert plain["totals"] == {**_totals(3, 1_000_010, 500_016), "cost_usd": pytest.approx(0.09)}
    assert plain["by_model"] == {
        "demo": demo,
        "groq-llama-8b": {**groq, "cost_usd": pytest.approx(0.09)},
    }
    assert set(plain) == {"totals", "by_model"}
    assert by_provider["by_provider"] == {"demo": demo, "groq": {**groq, "cost_usd": 0.09}}
    assert by_conv["by_conversation"]["conv-2"] == _totals(1, 7, 11)
    assert by_conv["by_conversation"]["conv-1"]["requests"] == 2


async def test_from_and_to_select_a_window(
    gateway_url: str, usage_service: None, publish: Publish
) -> None:
    await publish(
        [
            reported(prompt=1, completion=1, occurred_at=datetime(2025, 3, 1, 12, tzinfo=UTC)),
            reported(prompt=2, completion=2, occurred_at=datetime(2025, 3, 2, 23, tzinfo=UTC)),
            reported(prompt=4, completion=4, occurred_at=datetime(2025, 3, 3, 0, tzinfo=UTC)),
        ]
    )
    async with httpx.AsyncClient(base_url=gateway_url, timeout=TIMEOUT) as client:
        # A date `to` includes its whole day.
        days = await client.get("/v1/usage", params={"from": "2025-03-02", "to": "2025-03-02"})
        since = await client.get("/v1/usage", params={"from": "2025-03-02T00:00:00Z"})
        until = await client.get("/v1/usage", params={"to": "2025-03-02T23:00:00+00:00"})
    assert days.json()["totals"]["total_tokens"] == 4
    assert since.json()["totals"]["total_tokens"] == 12
    assert until.json()["totals"]["total_tokens"] == 2


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2025-13-01"}, "to"),
        ({"from": "2025-03-02", "to": "2025-03-01"}, "from"),
        ({"group_by": "user"}, "group_by"),
    ],
)
async def test_bad_parameters_are_a_422_in_the_error_shape(
    gateway_url: str, usage_service: None, params: dict[str, str], reason: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=TIMEOUT) as client:
        response = await client.get("/v1/usage", params=params)
        export = await client.get("/v1/usage/export", params=params)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert reason in error["message"]
    if "group_by" not in params:
        assert export.status_code == 422


async def test_export_is_one_csv_row_per_ledger_entry_of_the_caller(
    gateway_url: str, usage_service: None, publish: Publish
) -> None:
    mine = [
        reported(prompt=3, completion=5, occurred_at=NOW - timedelta(minutes=2)),
        reported(
            provider="groq",
            provider_model="llama-3.1-8b-instant",
            prompt=1000,
            completion=2000,
            outcome="switched",
            occurred_at=NOW - timedelta(minutes=1),
        ),
    ]
    await publish([*mine, reported(user_id="bob")])
    await publish(mine[:1])  # a redelivered report: still one row
    async with httpx.AsyncClient(base_url=gateway_url, timeout=TIMEOUT) as client:
        response = await client.get("/v1/usage/export")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["attempt_id"] for r in rows] == [e.attempt_id for e in mine]
    first, second = rows
    assert (first["prompt_tokens"], first["completion_tokens"], first["total_tokens"]) == (
        "3",
        "5",
        "8",
    )
    assert first["cost_usd"] == ""  # demo-1 has no price
    assert second["outcome"] == "switched"
    assert second["provider_model"] == "llama-3.1-8b-instant"
    assert float(second["cost_usd"]) == pytest.approx((1000 * 0.05 + 2000 * 0.08) / 1e6)
    assert second["estimated"] == "false"


async def test_without_the_usage_service_usage_is_a_503(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=TIMEOUT) as client:
        totals = await client.get("/v1/usage")
        export = await client.get("/v1/usage/export")
    for response in (totals, export):
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"


async def test_metrics_show_tokens_latency_and_errors_by_code(
    gateway_url: str, usage_service: None, publish: Publish
) -> None:
    await publish([reported(prompt=13, completion=8), reported(prompt=2, completion=1)])
    async with httpx.AsyncClient(base_url=gateway_url, timeout=TIMEOUT) as client:
        await client.get("/v1/usage", params={"from": "nope"})
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            text = (await client.get("/metrics")).text
            line = 'livechat_gateway_tokens_total{direction="in",model="demo-1",provider="demo"}'
            if f"{line} 15.0" in text:
                break
            assert asyncio.get_running_loop().time() < deadline, text
            await asyncio.sleep(0.1)
    assert (
        'livechat_gateway_tokens_total{direction="out",model="demo-1",provider="demo"} 9.0' in text
    )
    labels = 'model="demo-1",provider="demo"'
    assert f"livechat_gateway_time_to_first_token_seconds_count{{{labels}}} 2.0" in text
    assert f"livechat_gateway_generation_duration_seconds_count{{{labels}}} 2.0" in text
    assert 'livechat_gateway_errors_total{code="validation_error"} 1.0' in text
