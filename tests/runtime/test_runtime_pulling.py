"""The pull loop of a durable consumer: what queued while a pull was handled is taken
together, never more than the handler can take at once. Real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from runtime.pulling import PullLoop

STREAM = "PULLING"
SUBJECT = "pulling.work"
DURABLE = "worker"


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    js = client.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT]))
    await js.add_consumer(
        STREAM, ConsumerConfig(durable_name=DURABLE, ack_policy=AckPolicy.EXPLICIT)
    )
    try:
        yield client
    finally:
        await client.close()


class Handler:
    """Takes pulls one after the other; the first one waits until `release`."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.first_taken = asyncio.Event()
        self.release = asyncio.Event()
        self.changed = asyncio.Event()

    async def handle(self, messages: list[Msg]) -> None:
        self.batches.append([m.data for m in messages])
        if len(self.batches) == 1:
            self.first_taken.set()
            await self.release.wait()
        for message in messages:
            await message.ack()
        self.changed.set()

    def taken(self) -> list[bytes]:
        return [data for batch in self.batches for data in batch]


async def _publish(nc: Client, *texts: str) -> None:
    js = nc.jetstream()
    for text in texts:
        await js.publish(SUBJECT, text.encode())


async def _until_taken(handler: Handler, count: int) -> None:
    async with asyncio.timeout(30):  # a safety net, not a timing
        while len(handler.taken()) < count:
            handler.changed.clear()
            await handler.changed.wait()


async def test_what_queued_meanwhile_is_taken_together_up_to_what_can_be_taken(
    nc: Client,
) -> None:
    handler = Handler()
    loop = PullLoop(
        handler.handle,
        stream=STREAM,
        durable=DURABLE,
        batch=32,
        wait=2.0,
        depth=1,
        takeable=lambda: 3,
    )
    await loop.start(nc.jetstream())
    try:
        await _publish(nc, "first")
        async with asyncio.timeout(30):
            await handler.first_taken.wait()
        await _publish(nc, "a", "b", "c", "d", "e", "f", "g")
        handler.release.set()
        await _until_taken(handler, 8)
        # Later alone again: an idle loop hands a message on by itself.
        await _publish(nc, "later")
        await _until_taken(handler, 9)
    finally:
        await loop.stop(5.0)

    # The first of the queue tells how many wait behind it; they come 3 at a time.
    assert [len(batch) for batch in handler.batches] == [1, 1, 3, 3, 1]
    assert handler.taken() == [b"first", *(c.encode() for c in "abcdefg"), b"later"]


async def test_one_at_a_time_when_the_handler_can_take_no_more(nc: Client) -> None:
    handler = Handler()
    loop = PullLoop(
        handler.handle,
        stream=STREAM,
        durable=DURABLE,
        batch=32,
        wait=2.0,
        depth=1,
        takeable=lambda: 0,
    )
    await loop.start(nc.jetstream())
    try:
        await _publish(nc, "first")
        async with asyncio.timeout(30):
            await handler.first_taken.wait()
        await _publish(nc, "a", "b", "c")
        handler.release.set()
        await _until_taken(handler, 4)
    finally:
        await loop.stop(5.0)

    assert [len(batch) for batch in handler.batches] == [1, 1, 1, 1]
    assert handler.taken() == [b"first", b"a", b"b", b"c"]
