"""A real inference worker, providers behind their official SDK on a fake server, and the
usage service on one nats-server: the ledger holds what the provider reported, to the token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from fake_openai import FakeOpenAI, error_after, ok, stall_after
from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts import ids, subjects, topology
from contracts.events import (
    CONVERSATION_EVENT,
    CancelRequested,
    GenerationOptions,
    GenerationRequested,
    TokenEvent,
)
from contracts.rpc import ContextReply, UsageExportReply, UsageExportRequest
from inference import InferenceSettings
from inference import create_app as create_inference_app
from inference.providers.groq import create_groq_provider
from usage import UsageSettings
from usage import create_app as create_usage_app
from usage.prices import Price

TIMEOUT = 30.0
CHAIN = "chain"


@pytest.fixture
def primary() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def backup() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)

    async def memory(msg: Msg) -> None:  # stands in for the memory service
        await msg.respond(ContextReply().model_dump_json().encode())

    await client.subscribe(subjects.MEMORY_CONTEXT, cb=memory)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def system(
    nats_url: str, nc: Client, primary: FakeOpenAI, backup: FakeOpenAI, tmp_path: Path
) -> AsyncIterator[None]:
    aliases = {CHAIN: ("groq:llama-3.1-8b-instant", "backup:llama-3.3-70b-versatile")}
    inference_settings = InferenceSettings(
        nats_url=nats_url,
        model_aliases=aliases,
        retry_delay_seconds=0.2,
        provider_max_attempts=1,
    )
    providers = {
        "groq": create_groq_provider(api_key="k", base_url=primary.url, timeout=30),
        "backup": create_groq_provider(api_key="k", base_url=backup.url, timeout=30, name="backup"),
    }
    usage_settings = UsageSettings(
        nats_url=nats_url,
        data_dir=tmp_path / "usage",
        prices={"llama-3.3-70b-versatile": Price(input=0.59, output=0.79)},
    )
    apps = [
        create_usage_app(usage_settings),
        create_inference_app(inference_settings, providers=providers),
    ]
    for app in apps:
        await app.start()
    try:
        yield
    finally:
        for app in reversed(apps):
            await app.stop()


async def ask(nc: Client) -> tuple[str, int]:
    """Queue a generation of the `chain` alias; its reply id and work stream sequence."""
    message_id = ids.new_id()
    request = GenerationRequested(
        message_id=ids.reply_id("conv-acc", message_id),
        conversation_id="conv-acc",
        user_id="ann",
        user_message_id=message_id,
        content="How many tokens?",
        options=GenerationOptions(model=CHAIN),
        requested_at=datetime.now(UTC),
    )
    ack = await nc.jetstream().publish(
        subjects.GENERATE,
        request.model_dump_json().encode(),
        stream=topology.WORK_STREAM,
        headers={"Nats-Msg-Id": ids.msg_id("gen", "conv-acc", message_id)},
    )
    return request.message_id, ack.seq


async def entries(nc: Client) -> UsageExportReply:
    query = UsageExportRequest(user_id="ann").model_dump_json().encode()
    reply = await nc.request(subjects.USAGE_EXPORT, query, timeout=5)
    return UsageExportReply.model_validate_json(reply.data)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def settled(nc: Client, count: int) -> UsageExportReply:
    """The ledger once it holds `count` entries and every report was handled."""

    async def done() -> bool:
        js = nc.jetstream()
        work = await js.consumer_info(topology.WORK_STREAM, topology.INFERENCE_CONSUMER)
        usage = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
        idle = not (work.num_pending or work.num_ack_pending)
        idle = idle and not (usage.num_pending or usage.num_ack_pending)
        return idle and len((await entries(nc)).entries) >= count

    await eventually(done)
    return await entries(nc)


async def test_the_ledger_holds_the_provider_reported_usage_to_the_token(
    system: None, nc: Client, primary: FakeOpenAI
) -> None:
    primary.script(ok(["Forty", " two."], usage=(137, 42)))
    reply, _ = await ask(nc)

    [entry] = (await settled(nc, 1)).entries

    assert entry.message_id == reply
    assert (entry.usage.prompt_tokens, entry.usage.completion_tokens) == (137, 42)
    assert entry.usage.total_tokens == 179
    assert entry.estimated is False
    assert entry.outcome == "completed"
    assert (entry.model, entry.provider, entry.provider_model) == (
        CHAIN,
        "groq",
        "llama-3.1-8b-instant",
    )
    assert entry.duration_ms > 0 and entry.time_to_first_token_ms is not None
    assert entry.cost_usd is None  # no price for this model


async def test_a_failed_over_generation_accounts_both_calls_once(
    system: None, nc: Client, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.script(error_after(2, ["one", " two", " three"]))
    backup.script(ok(["Backup", " answer."], usage=(300, 9)))
    reply, _ = await ask(nc)

    switched, completed = (await settled(nc, 2)).entries

    assert {switched.message_id, completed.message_id} == {reply}
    assert switched.outcome == "switched" and switched.provider == "groq"
    assert switched.estimated is True  # the provider died before reporting
    assert switched.usage.completion_tokens == 2  # the two deltas it streamed
    assert completed.outcome == "completed" and completed.provider == "backup"
    assert (completed.usage.prompt_tokens, completed.usage.completion_tokens) == (300, 9)
    assert completed.estimated is False
    assert completed.cost_usd == pytest.approx((300 * 0.59 + 9 * 0.79) / 1e6)
    assert switched.attempt_id != completed.attempt_id


async def test_a_generation_that_fails_everywhere_is_accounted_as_failed(
    system: None, nc: Client, primary: FakeOpenAI, backup: FakeOpenAI
) -> None:
    primary.script(error_after(1, ["a", "b"]))
    backup.script(error_after(1, ["c", "d"]))
    await ask(nc)

    first, last = (await settled(nc, 2)).entries

    assert first.outcome == "switched"
    assert last.outcome == "failed" and last.provider == "backup"
    assert (first.usage.completion_tokens, last.usage.completion_tokens) == (1, 1)


async def tokens_streamed(nc: Client, reply: str) -> int:
    js = nc.jetstream()
    sub = await js.subscribe(subjects.events("conv-acc"), ordered_consumer=True)
    count = 0
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.2)
            except nats.errors.TimeoutError:
                return count
            event = CONVERSATION_EVENT.validate_json(msg.data)
            count += isinstance(event, TokenEvent) and event.message_id == reply
    finally:
        await sub.unsubscribe()


async def test_a_cancelled_generation_accounts_what_was_streamed(
    system: None, nc: Client, primary: FakeOpenAI
) -> None:
    primary.script(stall_after(2, ["one", " two", " three", " four"]))
    reply, seq = await ask(nc)

    async def two_tokens() -> bool:
        return await tokens_streamed(nc, reply) == 2

    await eventually(two_tokens)
    stop = CancelRequested(
        conversation_id="conv-acc", user_id="ann", before_seq=seq, requested_at=datetime.now(UTC)
    )
    await nc.publish(subjects.cancel("conv-acc"), stop.model_dump_json().encode())

    [entry] = (await settled(nc, 1)).entries
    primary.release()

    assert entry.message_id == reply
    assert entry.outcome == "cancelled"
    assert entry.estimated is True  # the provider was cut off before it reported usage
    assert entry.usage.completion_tokens == 2
