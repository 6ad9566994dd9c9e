"""Receipts: whether a stream holds every event published without waiting for its ack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig

from inference.receipts import AckInbox, Receipts, is_stored

KEPT = "receipts.kept"  # a subject the test stream takes
DROPPED = "receipts.dropped"  # one it does not: a publish there is dropped without a word


@pytest.fixture
async def stream(nc: Client) -> AsyncIterator[Client]:
    """A stream of `KEPT`; `DROPPED` has a subscriber, as a stream without a leader
    keeps the interest of its replicas: nobody answers an event published there."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="RECEIPTS", subjects=[KEPT], storage=StorageType.MEMORY))
    listener = await nc.subscribe(DROPPED)
    yield nc
    await listener.unsubscribe()
    await js.delete_stream("RECEIPTS")


async def publish(nc: Client, receipts: Receipts, *subjects: str) -> None:
    for subject in subjects:
        await receipts.listen()
        await nc.publish(subject, b"{}", receipts.reply_to())
    await nc.flush()


async def test_a_stream_holding_every_event_leaves_none_missing(stream: Client) -> None:
    receipts = Receipts(stream)
    await publish(stream, receipts, KEPT, KEPT, KEPT)
    assert await receipts.missing(wait=30) == 0
    await receipts.close()


async def test_an_event_dropped_before_the_last_is_missing(stream: Client) -> None:
    receipts = Receipts(stream)
    await publish(stream, receipts, KEPT, DROPPED, DROPPED, KEPT)
    # The last event's ack tells it at once: nothing more is waited for.
    assert await receipts.missing(wait=30) == 2
    await receipts.close()


async def test_the_last_event_dropped_is_missing_once_its_ack_is_waited_for(
    stream: Client,
) -> None:
    receipts = Receipts(stream)
    await publish(stream, receipts, KEPT, DROPPED)
    assert await receipts.missing(wait=0.2) == 1
    await receipts.close()


async def test_an_event_no_stream_takes_is_missing(stream: Client) -> None:
    # No subscriber either: the server answers "no responders" rather than an ack. Alone:
    # that answer comes from the server at once, and may overtake the ack of an event the
    # stream took before it (then counted missing too: a false alarm, a harmless resync).
    receipts = Receipts(stream)
    await publish(stream, receipts, "receipts.nobody")
    assert await receipts.missing(wait=30) == 1
    await receipts.close()


async def test_nothing_published_has_nothing_missing(stream: Client) -> None:
    receipts = Receipts(stream)
    assert await receipts.missing(wait=30) == 0
    await receipts.close()


async def test_replies_sharing_the_workers_inbox_count_only_their_own_acks(
    stream: Client,
) -> None:
    inbox = AckInbox(stream)
    first, second = Receipts(stream, inbox), Receipts(stream, inbox)
    await asyncio.gather(first.listen(), second.listen())  # one subscription for both
    for receipts, subject in ((first, KEPT), (second, DROPPED), (first, KEPT), (second, KEPT)):
        await stream.publish(subject, b"{}", receipts.reply_to())
    await stream.flush()
    assert await first.missing(wait=30) == 0
    assert await second.missing(wait=30) == 1
    await first.close()
    # A reply that ended hears no more; the others still do.
    await stream.publish(KEPT, b"{}", second.reply_to())
    await stream.flush()
    assert await second.missing(wait=30) == 1
    await second.close()
    await inbox.close()


def _msg(data: bytes, headers: dict[str, str] | None = None) -> Msg:
    nc: Any = None
    return Msg(nc, subject="_INBOX.x.0", data=data, headers=headers)


def test_only_a_stream_ack_says_the_event_is_stored() -> None:
    assert is_stored(_msg(b'{"stream":"LIVECHAT_EVENTS","seq":42}'))
    error = b'{"error":{"code":503,"err_code":10077,"description":"resources"},"stream":"S"}'
    assert not is_stored(_msg(error))
    assert not is_stored(_msg(b"", {"Status": "503"}))  # no responders
