"""The event hub and the replay join, on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from contracts import subjects, topology
from contracts.events import TokenEvent
from devstack.natsserver import NatsServer
from gateway.fanout.feed import EventFeed
from gateway.fanout.hub import EventHub


async def publish_tokens(js: JetStreamContext, conv: str, start: int, count: int) -> list[int]:
    seqs = []
    for i in range(start, start + count):
        event = TokenEvent(message_id="r1", content=f"t{i}")
        ack = await js.publish(subjects.events(conv), event.model_dump_json().encode())
        seqs.append(ack.seq)
    return seqs


@pytest.fixture
async def hub(js: JetStreamContext) -> AsyncIterator[EventHub]:
    events_hub = EventHub(js, listener_queue_size=32)
    await events_hub.start()
    try:
        yield events_hub
    finally:
        await events_hub.stop()


async def collect(feed: EventFeed, count: int) -> list[tuple[int, str]]:
    got: list[tuple[int, str]] = []
    while len(got) < count:
        batch = await asyncio.wait_for(feed.next(5), 20)
        got.extend((e.seq, e.event.content) for e in batch)  # type: ignore[union-attr]
    return got


async def test_replay_join_has_no_gap_and_no_duplicate(js, hub):
    before = await publish_tokens(js, "j1", 0, 300)
    await publish_tokens(js, "other", 0, 50)  # another conversation is not mixed in
    feed = EventFeed(hub, js, "j1")
    feed.replay_after(before[99])
    # Events published while the replay runs must come exactly once, in order.
    during = asyncio.create_task(publish_tokens(js, "j1", 300, 200))
    try:
        got = await collect(feed, 200 + 200)
        after_seqs = await during
    finally:
        await feed.close()
    assert [s for s, _ in got] == before[100:] + after_seqs
    assert [c for _, c in got] == [f"t{i}" for i in range(100, 500)]


async def test_lagging_listener_catches_up_from_the_stream(js, hub):
    feed = EventFeed(hub, js, "j2")
    try:
        # Nobody reads while 200 events arrive: far more than the 32 a listener holds.
        seqs = await publish_tokens(js, "j2", 0, 200)
        got = await collect(feed, 200)
    finally:
        await feed.close()
    assert [s for s, _ in got] == seqs
    assert hub.listener_count() == 0


async def test_live_only_feed_sees_events_after_attach(js, hub):
    earlier = EventFeed(hub, js, "j3")
    try:
        await publish_tokens(js, "j3", 0, 5)
        # Once a feed attached before them got all five, the hub has handed them out:
        # a feed attached now cannot be given any of them.
        await collect(earlier, 5)
        feed = EventFeed(hub, js, "j3")
        try:
            seqs = await publish_tokens(js, "j3", 5, 3)
            got = await collect(feed, 3)
        finally:
            await feed.close()
    finally:
        await earlier.close()
    assert [s for s, _ in got] == seqs


async def test_resubscribing_delivers_nothing_twice_and_nothing_less(js, hub):
    feed = EventFeed(hub, js, "j4")
    try:
        first = await publish_tokens(js, "j4", 0, 3)
        got = await collect(feed, 3)
        await hub.resubscribe()
        second = await publish_tokens(js, "j4", 3, 3)
        got += await collect(feed, 3)
        # Nothing more is pending: a repeat of an earlier event would show here.
        assert await feed.next(0.5) == []
    finally:
        await feed.close()
    assert [s for s, _ in got] == first + second


async def test_hub_follows_a_recreated_stream_after_a_nats_restart(
    nats_server: NatsServer, nc: Client, js, hub, settings
):
    feed = EventFeed(hub, js, "j5")
    try:
        before = await publish_tokens(js, "j5", 0, 2)
        assert [s for s, _ in await collect(feed, 2)] == before
        reconnects = nc.stats["reconnects"]
        nats_server.stop()
        nats_server.start()  # the memory stream LIVECHAT_EVENTS is gone now
        for _ in range(400):
            if nc.stats["reconnects"] > reconnects and nc.is_connected:
                break
            await asyncio.sleep(0.05)
        await topology.ensure_streams(js, settings)
        # Published before the hub resubscribes: still relayed, from the stream.
        during = await publish_tokens(js, "j5", 2, 2)
        await hub.resubscribe()
        after = await publish_tokens(js, "j5", 4, 2)
        got = await collect(feed, 4)
    finally:
        await feed.close()
    assert [s for s, _ in got] == during + after
    assert [c for _, c in got] == ["t2", "t3", "t4", "t5"]
    # The recreated stream numbers above every id given before the restart.
    assert during[0] > before[-1]
