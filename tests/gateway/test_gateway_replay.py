"""Reading a conversation's events back: a replay that nothing answers ends, and says
it stopped short (a repeat's reply is then not told from memory instead)."""

from __future__ import annotations

from nats.js import JetStreamContext

from contracts import subjects, topology
from gateway.fanout.replay import StreamReplay


async def test_a_replay_that_gets_nothing_ends_cut_short(js: JetStreamContext) -> None:
    # The events up to 5 are not this conversation's: none comes within the timeout.
    replay = StreamReplay(js, "replay-none", 0, 5, timeout=0.3)
    assert await replay.next_batch() == []
    assert replay.done and replay.cut_short


async def test_a_replay_to_its_last_event_is_not_cut_short(js: JetStreamContext) -> None:
    for n in range(3):
        data = b'{"type":"token","message_id":"r1","content":"%d"}' % n
        await js.publish(subjects.events("replay-all"), data)
    info = await js.get_last_msg(topology.EVENTS_STREAM, subjects.events("replay-all"))
    replay = StreamReplay(js, "replay-all", 0, int(info.seq or 0), timeout=5)
    events = await replay.next_batch()
    assert [e.event.content for e in events] == ["0", "1", "2"]  # type: ignore[union-attr]
    assert replay.done and not replay.cut_short
