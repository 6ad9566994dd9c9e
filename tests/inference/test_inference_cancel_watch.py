"""The stops a worker holds through its watch of the cancel bucket: a request taken looks
its stop up without reading the bucket, and a stop written while it is held stops it.
Real nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.kv import KeyValue

from contracts import topology
from contracts.events import CancelRequested
from inference.cancel import CancelSignals
from runtime.kv_watch import BucketWatch

TIMEOUT = 10.0


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


class _Unreadable:
    """A cancel bucket that cannot be read: the watch alone can answer."""

    async def get(self, key: str) -> None:
        raise AssertionError(f"read {key} although the watch is current")


def _stop(conversation_id: str, before_seq: int) -> bytes:
    cancel = CancelRequested(
        conversation_id=conversation_id,
        user_id="local",
        before_seq=before_seq,
        requested_at=datetime.now(UTC),
    )
    return cancel.model_dump_json().encode()


@pytest.fixture
async def bucket(nc: Client) -> KeyValue:
    js = nc.jetstream()
    await topology.ensure_buckets(js)
    return await js.key_value(topology.CANCEL_BUCKET)


@pytest.fixture
async def watched(nc: Client, bucket: KeyValue) -> AsyncIterator[tuple[CancelSignals, BucketWatch]]:
    """Stops looked up in the watch, never read from the bucket."""
    signals = CancelSignals()
    watch = BucketWatch(
        nc,
        nc.jetstream(),
        topology.CANCEL_BUCKET,
        on_change=signals.heard,
        confirm_seconds=0.05,
    )
    watch.start()
    await _until(lambda: watch.current, "the watch is current")
    signals.bind(_Unreadable(), watch)  # type: ignore[arg-type]
    try:
        yield signals, watch
    finally:
        await watch.aclose()


async def test_a_stop_pressed_while_queued_is_found_without_reading_the_bucket(
    bucket: KeyValue, watched: tuple[CancelSignals, BucketWatch], make_request: Any
) -> None:
    cancels, watch = watched
    await bucket.put(topology.cancel_key("queued", "local"), _stop("queued", before_seq=7))
    other = topology.cancel_key("elsewhere", "local")
    await bucket.put(other, _stop("elsewhere", before_seq=7))
    await _until(lambda: watch.get(other) is not None, "the watch holds the stops")

    stopped = cancels.hold(make_request("Stopped", conversation_id="queued"), work_seq=7)
    after = cancels.hold(make_request("Sent after", conversation_id="queued"), work_seq=8)
    untouched = cancels.hold(make_request("Not stopped", conversation_id="not-stopped"), 3)
    for stop in (stopped, after, untouched):
        await cancels.check_pressed(stop)

    assert (stopped.is_set, after.is_set, untouched.is_set) == (True, False, False)


async def test_a_stop_written_while_a_request_is_held_stops_it(
    bucket: KeyValue, watched: tuple[CancelSignals, BucketWatch], make_request: Any
) -> None:
    cancels, _ = watched
    held = cancels.hold(make_request("Held", conversation_id="held"), work_seq=4)
    await cancels.check_pressed(held)
    assert not held.is_set

    # Kept in the bucket only (its live announcement missed): the watch hands it on.
    await bucket.put(topology.cancel_key("held", "local"), _stop("held", before_seq=4))
    await _until(lambda: held.is_set, "the stop reached the held request")


async def test_without_a_current_watch_the_bucket_is_read(
    nc: Client, bucket: KeyValue, make_request: Any
) -> None:
    never_started = BucketWatch(nc, nc.jetstream(), topology.CANCEL_BUCKET)
    signals = CancelSignals()
    signals.bind(bucket, never_started)
    await bucket.put(topology.cancel_key("read", "local"), _stop("read", before_seq=2))

    stop = signals.hold(make_request("Read", conversation_id="read"), work_seq=2)
    await signals.check_pressed(stop)

    assert stop.is_set


async def test_a_stop_older_than_the_buckets_ttl_is_gone_from_the_watch_too(
    nc: Client, bucket: KeyValue, make_request: Any
) -> None:
    # The bucket drops a stop after its TTL (a day) without a word: the watch holds it
    # no longer either (as a read of the bucket would not find it; nor is it kept).
    now = [time.time()]
    signals = CancelSignals()
    watch = BucketWatch(
        nc,
        nc.jetstream(),
        topology.CANCEL_BUCKET,
        on_change=signals.heard,
        confirm_seconds=0.05,
        wall=lambda: now[0],
    )
    watch.start()
    try:
        await _until(lambda: watch.current, "the watch is current")
        signals.bind(_Unreadable(), watch)  # type: ignore[arg-type]
        key = topology.cancel_key("aged", "local")
        await bucket.put(key, _stop("aged", before_seq=5))
        await _until(lambda: watch.get(key) is not None, "the watch holds the stop")

        now[0] += 24 * 3600 + 60  # past the bucket's TTL
        stop = signals.hold(make_request("Redelivered", conversation_id="aged"), work_seq=5)
        await signals.check_pressed(stop)

        assert watch.get(key) is None
        assert not stop.is_set
    finally:
        await watch.aclose()
