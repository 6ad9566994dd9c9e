"""The usage service through a real nats-server: exact totals, one record per attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from responders import ask

from contracts import consumers, ids, subjects, topology
from contracts.events import UsageRecorded, UsageReported
from contracts.rpc import Pong, UsageTotalsReply, UsageTotalsRequest
from usage import Ledger, UsageSettings, create_app, create_engine
from usage.app import ensure_report_topology

Report = Callable[..., UsageReported]

TIMEOUT = 30.0


async def eventually(check: Callable[[], Awaitable[bool]], within: float = TIMEOUT) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.1)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url, max_reconnect_attempts=-1)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def js(nc: Client, nats_url: str) -> JetStreamContext:
    context = nc.jetstream()
    await topology.ensure_streams(context, UsageSettings(nats_url=nats_url))
    return context


def _settings(nats_url: str, database_url: str, tmp_path: Path) -> UsageSettings:
    return UsageSettings(
        nats_url=nats_url,
        data_dir=tmp_path / "data",
        database_url=database_url,
        usage_ack_wait_seconds=2,
        usage_retry_delay_seconds=0.2,
    )


@pytest.fixture
async def service(
    js: JetStreamContext, nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[None]:
    app = create_app(_settings(nats_url, database_url, tmp_path))
    await app.start()
    try:
        yield
    finally:
        await app.stop()


async def publish(js: JetStreamContext, event: UsageReported, msg_id: str | None = None) -> int:
    ack = await js.publish(
        subjects.usage_reported(event.conversation_id, event.message_id),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or ids.msg_id("usage", event.attempt_id)},
    )
    return ack.seq


async def totals(nc: Client, user_id: str) -> UsageTotalsReply:
    request = UsageTotalsRequest(user_id=user_id).model_dump_json().encode()
    reply = await ask(nc, subjects.USAGE_TOTALS, request)
    return UsageTotalsReply.model_validate_json(reply.data)


async def consumed_through(js: JetStreamContext, seq: int) -> bool:
    """Every report up to stream sequence `seq` was handled and acked."""
    try:
        info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
    except nats.js.errors.NotFoundError:
        return False
    return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= seq


async def recorded_on_stream(js: JetStreamContext) -> list[UsageRecorded]:
    info = await js.stream_info(topology.USAGE_STREAM, subjects_filter=subjects.USAGE_RECORDED)
    count = (info.state.subjects or {}).get(subjects.USAGE_RECORDED, 0)
    events: list[UsageRecorded] = []
    if count:
        sub = await js.pull_subscribe(subjects.USAGE_RECORDED, stream=topology.USAGE_STREAM)
        while len(events) < count:
            for msg in await sub.fetch(count - len(events), timeout=5):
                events.append(UsageRecorded.model_validate_json(msg.data))
                await msg.ack()
        await sub.unsubscribe()
    return events


async def test_totals_equal_the_sum_of_the_reports(
    service: None, nc: Client, js: JetStreamContext, report: Report
) -> None:
    events = [
        report(user_id="alice", model="demo", prompt=3, completion=5),
        report(user_id="alice", model="demo", prompt=7, completion=11),
        report(user_id="alice", model="groq-llama-8b", prompt=13, completion=17),
        report(user_id="bob", model="demo", prompt=19, completion=23),
    ]
    for event in events:
        await publish(js, event)

    async def alice_done() -> bool:
        return (await totals(nc, "alice")).totals.requests == 3

    await eventually(alice_done)
    alice = await totals(nc, "alice")
    assert alice.totals.prompt_tokens == 3 + 7 + 13
    assert alice.totals.completion_tokens == 5 + 11 + 17
    assert alice.totals.total_tokens == 56
    assert alice.by_model["demo"].requests == 2
    assert alice.by_model["demo"].total_tokens == 26
    assert alice.by_model["groq-llama-8b"].total_tokens == 30

    async def bob_done() -> bool:
        return (await totals(nc, "bob")).totals.total_tokens == 42

    await eventually(bob_done)

    async def all_recorded() -> bool:
        return len(await recorded_on_stream(js)) == len(events)

    await eventually(all_recorded)
    recorded = await recorded_on_stream(js)
    assert sorted(r.attempt_id for r in recorded) == sorted(e.attempt_id for e in events)
    assert {r.attempt_id: r.usage for r in recorded} == {e.attempt_id: e.usage for e in events}


async def test_a_report_delivered_twice_is_counted_once(
    service: None, nc: Client, js: JetStreamContext, report: Report
) -> None:
    event = report(prompt=40, completion=2)
    await publish(js, event)
    # A different Nats-Msg-Id, so JetStream keeps both: the ledger must dedupe.
    last = await publish(js, event, msg_id=f"replayed:{event.attempt_id}")

    await eventually(lambda: consumed_through(js, last))

    reply = await totals(nc, "alice")
    assert reply.totals.requests == 1
    assert reply.totals.total_tokens == 42
    recorded = await recorded_on_stream(js)
    assert [r.attempt_id for r in recorded] == [event.attempt_id]


async def test_a_report_committed_before_a_crash_is_still_republished(
    service: None, nc: Client, js: JetStreamContext, database_url: str, report: Report
) -> None:
    event = report(prompt=5, completion=5)
    # The ledger row exists, as after a crash between the commit and the republish.
    engine = create_engine(database_url)
    try:
        await Ledger(engine).record(event)
    finally:
        await engine.dispose()

    last = await publish(js, event)
    await eventually(lambda: consumed_through(js, last))

    assert (await totals(nc, "alice")).totals.total_tokens == 10
    recorded = await recorded_on_stream(js)
    assert [r.attempt_id for r in recorded] == [event.attempt_id]


async def test_a_malformed_report_does_not_block_the_others(
    service: None, nc: Client, js: JetStreamContext, report: Report
) -> None:
    await js.publish(subjects.usage_reported("conv-1", "m1"), b'{"not": "a usage report"}')
    event = report(prompt=1, completion=1)
    last = await publish(js, event)

    await eventually(lambda: consumed_through(js, last))

    assert (await totals(nc, "alice")).totals.total_tokens == 2
    info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_reports_on_the_subject_of_before_an_upgrade_are_recorded_too(
    nc: Client,
    js: JetStreamContext,
    report: Report,
    nats_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    # The consumer as an older usage service made it, and a report an older worker left
    # on the one subject of before: the service takes it, and those on each reply's own.
    older = dataclasses.replace(consumers.USAGE, filter_subject=subjects.USAGE_REPORTED, also=())
    await js.add_consumer(topology.USAGE_STREAM, older.config(ack_wait=2))
    before = report(prompt=2, completion=3)
    await js.publish(subjects.USAGE_REPORTED, before.model_dump_json().encode())
    app = create_app(_settings(nats_url, database_url, tmp_path))
    await app.start()
    try:
        last = await publish(js, report(prompt=5, completion=7))
        await eventually(lambda: consumed_through(js, last))
        assert (await totals(nc, "alice")).totals.total_tokens == 17
    finally:
        await app.stop()
    info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
    assert info.config.filter_subjects == [subjects.USAGE_REPORTED_ALL, subjects.USAGE_REPORTED]


async def _older_usage_left(js: JetStreamContext, ledger: Ledger, report: Report) -> list[int]:
    """The upgrade hazard: a newer worker's report on its reply's own subject, then an
    older worker's on the one subject of before, which an older usage service (its
    consumer takes that subject only) recorded and acked. The older consumer is past
    the newer report. Returns both reports' tokens."""
    older = dataclasses.replace(consumers.USAGE, filter_subject=subjects.USAGE_REPORTED, also=())
    await js.add_consumer(topology.USAGE_STREAM, older.config(ack_wait=2))
    newer, bare = report(prompt=2, completion=3), report(prompt=5, completion=7)
    await publish(js, newer)
    await js.publish(subjects.USAGE_REPORTED, bare.model_dump_json().encode())
    pull = await js.pull_subscribe_bind(topology.USAGE_CONSUMER, topology.USAGE_STREAM)
    (message,) = await pull.fetch(1, timeout=5)
    assert UsageReported.model_validate_json(message.data) == bare
    assert (await ledger.record(bare)).inserted
    await message.ack_sync()
    await pull.unsubscribe()
    return [newer.usage.total_tokens, bare.usage.total_tokens]


async def test_an_upgrade_records_the_reports_the_older_consumer_passed_over(
    nc: Client,
    js: JetStreamContext,
    report: Report,
    ledger: Ledger,
    nats_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    tokens = await _older_usage_left(js, ledger, report)
    app = create_app(_settings(nats_url, database_url, tmp_path), ledger=ledger)
    await app.start()
    try:
        later = report(prompt=11, completion=13)
        last = await publish(js, later)
        await eventually(lambda: consumed_through(js, last))
        alice = await totals(nc, "alice")
    finally:
        await app.stop()
    # Each report once: the one passed over recorded, the bare one redelivered not twice.
    assert alice.totals.requests == 3
    assert alice.totals.total_tokens == sum(tokens) + later.usage.total_tokens
    # The next start updates the replacement (its start position kept) and goes on.
    app = create_app(_settings(nats_url, database_url, tmp_path), ledger=ledger)
    await app.start()
    try:
        last = await publish(js, report(prompt=1, completion=1))
        await eventually(lambda: consumed_through(js, last))
        assert (await totals(nc, "alice")).totals.requests == 4
    finally:
        await app.stop()
    info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
    assert info.config.filter_subjects == [subjects.USAGE_REPORTED_ALL, subjects.USAGE_REPORTED]
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_usage_services_upgrading_at_once_keep_the_reports_passed_over(
    nc: Client,
    js: JetStreamContext,
    report: Report,
    ledger: Ledger,
    nats_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    tokens = await _older_usage_left(js, ledger, report)
    settings = _settings(nats_url, database_url, tmp_path)
    # Two instances replace the older consumer at once, each on its own connection (their
    # topology step: in one process, their database migrations would share alembic's
    # globals), then one of them consumes.
    clients = [await nats.connect(nats_url) for _ in range(2)]
    try:
        await asyncio.gather(
            *(ensure_report_topology(client.jetstream(), settings) for client in clients)
        )
    finally:
        for client in clients:
            await client.close()
    app = create_app(settings, ledger=ledger)
    await app.start()
    try:
        later = report(prompt=11, completion=13)
        last = await publish(js, later)
        await eventually(lambda: consumed_through(js, last))
        alice = await totals(nc, "alice")
    finally:
        await app.stop()
    assert alice.totals.requests == 3
    assert alice.totals.total_tokens == sum(tokens) + later.usage.total_tokens


async def test_ping(service: None, nc: Client) -> None:
    reply = await ask(nc, subjects.ping("usage"))
    assert Pong.model_validate_json(reply.data) == Pong(service="usage")


# --- the service as its own process --------------------------------------------------


def _spawn(nats_url: str, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    env |= {
        "LIVECHAT_NATS_URL": nats_url,
        "LIVECHAT_DATA_DIR": str(data_dir),  # no database url: SQLite in the data dir
        "LIVECHAT_USAGE_ACK_WAIT_SECONDS": "2",
        "LIVECHAT_USAGE_FETCH_BATCH": "4",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "usage"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _wait_ready(nc: Client) -> None:
    async def answers() -> bool:
        try:
            await nc.request(subjects.ping("usage"), b"", timeout=1)
        except (NoRespondersError, NatsTimeout):
            return False
        return True

    await eventually(answers, within=60)


async def test_a_killed_and_restarted_service_loses_nothing(
    nc: Client, js: JetStreamContext, nats_url: str, tmp_path: Path, report: Report
) -> None:
    events = [report(prompt=i, completion=1) for i in range(1, 61)]
    expected_tokens = sum(e.usage.total_tokens for e in events)

    async def publish_all() -> None:
        for event in events:
            await publish(js, event)
            await asyncio.sleep(0.02)

    process = _spawn(nats_url, tmp_path)
    try:
        await _wait_ready(nc)
        publisher = asyncio.create_task(publish_all())

        async def some_recorded() -> bool:
            return (await totals(nc, "alice")).totals.requests >= 10

        await eventually(some_recorded)
        process.kill()  # a crash, mid-run: fetched reports are not acked
        await asyncio.to_thread(process.wait)
        process = _spawn(nats_url, tmp_path)
        await publisher

        async def all_recorded() -> bool:
            try:
                reply = await totals(nc, "alice")
            except (NoRespondersError, NatsTimeout):
                return False
            return reply.totals.requests == len(events)

        await eventually(all_recorded, within=60)
        assert (await totals(nc, "alice")).totals.total_tokens == expected_tokens

        async def all_acked() -> bool:
            # A report the killed process committed but never acked is redelivered
            # after the ack wait; its analytics event is published then.
            info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
            return not (info.num_pending or info.num_ack_pending)

        await eventually(all_acked, within=60)

        # SIGTERM: a clean stop with exit code 0.
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    recorded = await recorded_on_stream(js)
    assert sorted(r.attempt_id for r in recorded) == sorted(e.attempt_id for e in events)


@pytest.mark.postgres
async def test_a_report_the_database_refuses_is_terminated_and_the_rest_recorded(
    nc: Client,
    js: JetStreamContext,
    postgres_url: str,
    nats_url: str,
    tmp_path: Path,
    report: Report,
) -> None:
    # PostgreSQL refuses a user id longer than the ledger's column (SQLite would not):
    # retrying could never succeed, so the report is terminated, not redelivered forever.
    refused = report(user_id="x" * 300, prompt=1, completion=1)
    kept = report(user_id="carol", prompt=2, completion=3)
    app = create_app(_settings(nats_url, postgres_url, tmp_path))
    await app.start()
    try:
        await publish(js, refused)
        last = await publish(js, kept)

        async def settled() -> bool:
            return await consumed_through(js, last)

        await eventually(settled)
        carol = await totals(nc, "carol")
        info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
    finally:
        await app.stop()

    assert carol.totals.total_tokens == 5
    assert info.num_ack_pending == 0 and info.num_redelivered == 0
