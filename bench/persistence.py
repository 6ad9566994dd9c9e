"""Persistence: usage events and memory writes per second into the database, acked after commit.

Each service runs as its own process (`python -m usage`, `python -m memory`) on a
nats-server of its own and the given database. Two phases per service:

* throughput: a burst of events stored while the service's consumer is paused, then
  released at once; the rate is events over the time from the release to the
  consumer's ack floor passing the last one (the service acks after its commit);
* lag: events published at a steady pace under that ceiling; an event's lag is
  from its publish to the ack floor passing it, sampled every few milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import nats
from nats.js import JetStreamContext
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from bench.stats import Percentiles, percentiles
from contracts import ids, subjects, topology
from contracts.events import Usage, UsageReported, UserMessageAccepted
from devstack.natsserver import NatsServer

__all__ = ["PersistResult", "persistence_rows", "persistence_table", "run_persistence"]

_POLL_SECONDS = 0.002
_WINDOW = 512  # publishes in flight at once
_CONVERSATIONS = 200
_START_TIMEOUT = 60.0
_PAUSED_UNTIL = "2100-01-01T00:00:00Z"  # until resumed


@dataclass(frozen=True, slots=True)
class PersistResult:
    service: str  # "usage" or "memory"
    backend: str  # "PostgreSQL" or "SQLite"
    events: int
    seconds: float
    paced_rate: float
    lag: Percentiles | None

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _usage_event(n: int, run: str) -> tuple[str, BaseModel, str]:
    message_id = f"{run}u{n}"
    event = UsageReported(
        attempt_id=ids.attempt_id(message_id, 1, 0),
        message_id=message_id,
        conversation_id=f"{run}c{n % _CONVERSATIONS}",
        user_id=f"user{n % 50}",
        model="demo",
        provider="demo",
        provider_model="demo",
        usage=Usage.of(20, 100),
        outcome="completed",
        time_to_first_token_ms=50.0,
        duration_ms=1000.0,
        occurred_at=datetime.now(UTC),
    )
    subject = subjects.usage_reported(event.conversation_id, event.message_id)
    return subject, event, ids.msg_id("usage", event.attempt_id)


def _memory_event(n: int, run: str) -> tuple[str, BaseModel, str]:
    conversation = f"{run}c{n % _CONVERSATIONS}"
    event = UserMessageAccepted(
        message_id=f"{run}m{n}",
        conversation_id=conversation,
        user_id=f"user{n % 50}",
        content="How do I size a PostgreSQL connection pool for a chat backend?",
        created_at=datetime.now(UTC),
    )
    return (
        subjects.chat_user(conversation),
        event,
        ids.msg_id("user", conversation, event.message_id),
    )


_SERVICES: dict[str, tuple[str, str, Callable[[int, str], tuple[str, BaseModel, str]]]] = {
    "usage": (topology.USAGE_STREAM, topology.USAGE_CONSUMER, _usage_event),
    "memory": (topology.CHAT_STREAM, topology.MEMORY_CONSUMER, _memory_event),
}


@contextlib.asynccontextmanager
async def _database(url: str | None, tmp: Path) -> AsyncIterator[tuple[str, str]]:
    """A fresh database on the server of `url` (dropped afterwards), or a SQLite file."""
    if not url:
        yield f"sqlite+aiosqlite:///{tmp / 'bench.db'}", "SQLite"
        return
    import asyncpg

    parsed = make_url(url)
    admin_dsn = parsed.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    name = f"livechat_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False), "PostgreSQL"
    finally:
        admin = await asyncpg.connect(admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.contextmanager
def _service(name: str, nats_url: str, database_url: str, data_dir: Path) -> Iterator[None]:
    # Only what the service needs: a developer's LIVECHAT_* settings must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    env.update(
        LIVECHAT_NATS_URL=nats_url,
        LIVECHAT_DATABASE_URL=database_url,
        LIVECHAT_DATA_DIR=str(data_dir),
        LIVECHAT_LOG_LEVEL="WARNING",
        # Reports fetched per pull are committed in one transaction.
        LIVECHAT_USAGE_FETCH_BATCH="256",
    )
    with (data_dir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", name], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _ack_floor(js: JetStreamContext, stream: str, consumer: str) -> int:
    info = await js.consumer_info(stream, consumer)
    return int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0


async def _wait_for_consumer(js: JetStreamContext, stream: str, consumer: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.consumer_info(stream, consumer)
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {consumer} consumer did not appear (see the service log)")
        await asyncio.sleep(0.1)


async def _publish(js: JetStreamContext, event: tuple[str, BaseModel, str]) -> tuple[int, float]:
    subject, body, msg_id = event
    sent = time.perf_counter()
    ack = await js.publish(
        subject, body.model_dump_json().encode(), headers={"Nats-Msg-Id": msg_id}
    )
    return ack.seq, sent


async def _drained(js: JetStreamContext, stream: str, consumer: str, last: int) -> float:
    deadline = time.monotonic() + _START_TIMEOUT
    while await _ack_floor(js, stream, consumer) < last:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {consumer} consumer stopped acking")
        await asyncio.sleep(_POLL_SECONDS)
    return time.perf_counter()


async def _throughput(
    js: JetStreamContext, service: str, count: int, run: str, *, held: bool = True
) -> float:
    stream, consumer, make = _SERVICES[service]
    events = [make(n, run) for n in range(count)]
    if held:
        # The consumer is paused while the burst is stored: one Python client publishes
        # only a few thousand events/s, and that is not what this figure is about.
        await js.pause_consumer(stream, consumer, _PAUSED_UNTIL)
    started = time.perf_counter()
    last = 0
    try:
        for i in range(0, count, _WINDOW):
            acks = await asyncio.gather(*(_publish(js, e) for e in events[i : i + _WINDOW]))
            last = max(last, *(seq for seq, _ in acks))
    finally:
        if held:
            await js.resume_consumer(stream, consumer)
            started = time.perf_counter()
    return await _drained(js, stream, consumer, last) - started


async def _lags(
    js: JetStreamContext, service: str, rate: float, seconds: float, run: str
) -> list[float]:
    stream, consumer, make = _SERVICES[service]
    published: dict[int, float] = {}
    acked_at: list[tuple[float, int]] = []  # (time, ack floor), as sampled
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set() or not published or acked_at[-1][1] < max(published):
            floor = await _ack_floor(js, stream, consumer)
            acked_at.append((time.perf_counter(), floor))
            await asyncio.sleep(_POLL_SECONDS)

    async def one(n: int) -> None:
        seq, sent = await _publish(js, make(n, run))
        published[seq] = sent

    sampler = asyncio.create_task(sample())
    tasks = []
    start = time.perf_counter()
    total = max(1, int(rate * seconds))
    for n in range(total):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    done.set()
    await asyncio.wait_for(sampler, _START_TIMEOUT)
    lags = []
    index = 0
    for seq in sorted(published):
        while acked_at[index][1] < seq:
            index += 1
        lags.append(max(0.0, acked_at[index][0] - published[seq]))
    return lags


async def _measure(
    service: str, database_url: str, backend: str, tmp: Path, count: int, rate: float, secs: float
) -> PersistResult:
    server = NatsServer(tmp / f"nats-{service}")
    server.start()
    try:
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream(timeout=30)
            stream, consumer, _ = _SERVICES[service]
            with _service(service, server.url, database_url, tmp):
                await _wait_for_consumer(js, stream, consumer)
                # Connections, caches, prepared statements.
                await _throughput(js, service, min(count, 200), "warm", held=False)
                seconds = await _throughput(js, service, count, "burst")
                lags = await _lags(js, service, rate, secs, "paced")
        finally:
            await nc.close()
    finally:
        server.stop()
    return PersistResult(service, backend, count, seconds, rate, percentiles(lags))


async def run_persistence(
    database_url: str | None, *, events: int, rate: float, seconds: float
) -> list[PersistResult]:
    with tempfile.TemporaryDirectory(prefix="livechat-bench-db-") as name:
        tmp = Path(name)
        results = []
        for service in ("usage", "memory"):
            async with _database(database_url, tmp) as (url, backend):
                results.append(await _measure(service, url, backend, tmp, events, rate, seconds))
        return results


def persistence_rows(results: list[PersistResult]) -> list[tuple[str, str]]:
    rows = []
    for r in results:
        what = "usage events" if r.service == "usage" else "memory writes"
        rows.append((f"{what}/s into {r.backend} (ack after commit)", f"{r.per_second:,.0f}"))
        lag = "n/a" if r.lag is None else f"{r.lag.p99 * 1000:.1f} ms"
        rows.append((f"{what} lag p99 at {r.paced_rate:,.0f}/s", lag))
    return rows


def persistence_table(results: list[PersistResult]) -> str:
    lines = ["| persistence | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in persistence_rows(results)]
    lines.append("")
    lines.append(
        "- Each service in its own process on its own nats-server; the rate is a burst "
        "of events, stored while the consumer is paused, over the time from its release "
        "to the consumer's ack floor passing the last one (acks follow the commit); lag "
        "is from publish to that ack, at a steady pace."
    )
    return "\n".join(lines)
