"""A client's mailbox: a wait ends with the next event, or empty once its time is up."""

from __future__ import annotations

import asyncio

from contracts.events import TokenEvent
from gateway.fanout.frames import RelayedEvent
from gateway.fanout.listener import Listener

# Only a guard: a wait that never ends fails the test instead of hanging it.
_GUARD = 10.0


def _event(seq: int) -> RelayedEvent:
    return RelayedEvent(seq, "c1", TokenEvent(message_id="r1", content=f"t{seq}"))


async def _wait(listener: Listener, max_wait: float | None) -> list[int]:
    batch = await asyncio.wait_for(listener.get_batch(max_wait), _GUARD)
    return [event.seq for event in batch]


async def _push_soon(listener: Listener, seq: int) -> None:
    await asyncio.sleep(0.01)
    listener.push(_event(seq))


async def test_a_wait_ends_with_the_event_pushed_meanwhile():
    listener = Listener("c1", 8)
    pushing = asyncio.create_task(_push_soon(listener, 1))
    assert await _wait(listener, 60.0) == [1]
    await pushing


async def test_a_short_wait_after_a_long_one_times_out_empty():
    # The long wait's timer outlives it; the ping wait after it must not wait for it.
    listener = Listener("c1", 8)
    pushing = asyncio.create_task(_push_soon(listener, 1))
    assert await _wait(listener, 60.0) == [1]
    await pushing
    assert await _wait(listener, 0.05) == []


async def test_a_wait_after_events_times_out_empty_when_none_comes():
    # Each wait after an event starts its own time: the timer armed by the first one
    # fires before the last one's deadline and must wait on for the rest of it.
    listener = Listener("c1", 8)
    for seq in range(1, 4):
        pushing = asyncio.create_task(_push_soon(listener, seq))
        assert await _wait(listener, 0.1) == [seq]
        await pushing
    assert await _wait(listener, 0.1) == []
    # And it still takes the next event after timing out.
    pushing = asyncio.create_task(_push_soon(listener, 4))
    assert await _wait(listener, 0.1) == [4]
    await pushing


async def test_a_wait_without_limit_is_not_ended_by_an_earlier_timer():
    # The first wait's timer outlives it and fires during the second, unlimited one.
    listener = Listener("c1", 8)
    pushing = asyncio.create_task(_push_soon(listener, 1))
    assert await _wait(listener, 0.05) == [1]
    await pushing

    async def push_later() -> None:
        await asyncio.sleep(0.2)
        listener.push(_event(2))

    later = asyncio.create_task(push_later())
    assert await _wait(listener, None) == [2]
    await later
