"""A WebSocket `message` frame that repeats a client message id gets the same memory
check as POST .../messages: past the dedupe window it is still answered once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from contracts import ids, rpc, topology


def _ws(gateway_url: str) -> Any:
    return websockets.connect(gateway_url.replace("http://", "ws://") + "/v1/ws")


async def _recv(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    return frame


async def _until_done(
    ws: Any, reply: str, frames: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    frames = [] if frames is None else frames
    while True:
        frame = await _recv(ws)
        if frame.get("message_id") == reply:
            frames.append(frame)
            if frame["type"] in ("done", "error"):
                return frames


async def _first_of(ws: Any, reply: str) -> dict[str, Any]:
    """The next frame of the reply (presence and other frames are skipped)."""
    while True:
        frame = await _recv(ws)
        if frame.get("message_id") == reply:
            return frame


def _stored(message_id: str, role: str, status: str = "complete") -> rpc.StoredMessage:
    return rpc.StoredMessage(
        id=message_id,
        role=role,
        content="stored answer" if role == "assistant" else "again",
        status=status,
        created_at="2025-01-01T00:00:00Z",
    )


async def _published(js: Any) -> list[int]:
    names = (topology.CHAT_STREAM, topology.WORK_STREAM)
    return [(await js.stream_info(name)).state.last_seq for name in names]


async def test_a_repeat_of_a_message_in_flight_follows_it(
    gateway_url: str, backends: Any, worker: Any, js: Any, settings: Any
) -> None:
    # A dedupe window so short that the repeat comes after it, as after a long wait.
    await topology.ensure_streams(js, settings.model_copy(update={"dedupe_window_seconds": 0.2}))
    worker.hold = asyncio.Event()
    frame = {"type": "message", "conversation_id": "wsfl", "content": "slow", "id": "m-2"}
    reply = ids.reply_id("wsfl", "m-2")
    async with _ws(gateway_url) as first, _ws(gateway_url) as second:
        await first.send(json.dumps(frame))
        for _ in range(400):
            if worker.requests:
                break
            await asyncio.sleep(0.025)
        assert worker.requests
        # Memory holds the user message (as it would past the dedupe window), no reply yet.
        backends.add_conversation("wsfl", (_stored("m-2", "user"),))
        before = await _published(js)
        await asyncio.sleep(0.5)  # past the window
        await second.send(json.dumps(frame))
        # Released only once the repeat is followed: its replay reached the client.
        replayed = await _first_of(second, reply)
        assert (replayed["type"], replayed["message_id"]) == ("start", reply)
        worker.hold.set()
        first_frames, second_frames = await asyncio.gather(
            _until_done(first, reply), _until_done(second, reply, [replayed])
        )
    assert second_frames == first_frames  # the same generation, from its start
    assert second_frames[-1]["type"] == "done"
    assert len(worker.requests) == 1
    assert await _published(js) == before


async def test_a_repeat_whose_reply_is_final_in_memory_is_not_answered_again(
    gateway_url: str, backends: Any, worker: Any, js: Any
) -> None:
    reply = ids.reply_id("wsmem", "m-1")
    backends.add_conversation("wsmem", (_stored("m-1", "user"), _stored(reply, "assistant")))
    before = await _published(js)
    async with _ws(gateway_url) as ws:
        frame = {"type": "message", "conversation_id": "wsmem", "content": "again", "id": "m-1"}
        await ws.send(json.dumps(frame))
        frames = await _until_done(ws, reply)
        await ws.send(json.dumps({"type": "ping"}))
        assert await _recv(ws) == {"type": "pong"}  # nothing else came meanwhile
    # The answer given before, as memory holds it: nothing generated again.
    assert [f["type"] for f in frames] == ["token", "done"]
    assert frames[0]["content"] == "stored answer"
    assert frames[1]["finish_reason"] == "stop"
    assert all(f["conversation_id"] == "wsmem" for f in frames)
    assert frames[0]["event_id"] < frames[1]["event_id"]
    assert worker.requests == []
    assert await _published(js) == before


async def test_a_repeat_on_the_socket_that_follows_the_reply_replays_it_from_its_start(
    gateway_url: str, backends: Any, worker: Any, js: Any, settings: Any
) -> None:
    await topology.ensure_streams(js, settings.model_copy(update={"dedupe_window_seconds": 0.2}))
    worker.hold = asyncio.Event()
    frame = {"type": "message", "conversation_id": "wsre", "content": "slow", "id": "m-3"}
    reply = ids.reply_id("wsre", "m-3")
    async with _ws(gateway_url) as ws:
        await ws.send(json.dumps(frame))
        seen = []
        while not any(f.get("type") == "status" for f in seen):
            seen.append(await _recv(ws))
        backends.add_conversation("wsre", (_stored("m-3", "user"),))
        await asyncio.sleep(0.5)  # past the window
        await ws.send(json.dumps(frame))
        replayed = await _first_of(ws, reply)
        assert (replayed["type"], replayed["message_id"]) == ("start", reply)
        worker.hold.set()
        again = await _until_done(ws, reply, [replayed])
    first_ids = [f["event_id"] for f in seen if f.get("message_id") == reply]
    # The reply from its first event (the same ids: a client can tell), then to its end.
    assert [f["event_id"] for f in again][: len(first_ids)] == first_ids
    assert again[-1]["type"] == "done"
    assert len(worker.requests) == 1


async def test_a_repeat_of_a_final_reply_the_stream_holds_gets_its_events_with_their_ids(
    gateway_url: str, backends: Any, worker: Any, js: Any, settings: Any
) -> None:
    # A client saw part of a reply, lost its socket (a NATS node lost, say) and sent the
    # message again once the reply was final: it is given the reply's events as the
    # stream holds them, with the ids it holds some of, not the stored text as a token
    # below them (joined by id, that came before its part: the text twice over).
    await topology.ensure_streams(js, settings.model_copy(update={"dedupe_window_seconds": 0.2}))
    frame = {"type": "message", "conversation_id": "wsfin", "content": "a b c d", "id": "m-4"}
    reply = ids.reply_id("wsfin", "m-4")
    async with _ws(gateway_url) as ws:
        await ws.send(json.dumps(frame))
        live = await _until_done(ws, reply)
    answer = "".join(f["content"] for f in live if f["type"] == "token")
    stored = _stored(reply, "assistant").model_copy(update={"content": answer})
    backends.add_conversation("wsfin", (_stored("m-4", "user"), stored))
    await asyncio.sleep(0.5)  # past the window: memory tells it is answered
    async with _ws(gateway_url) as ws:
        await ws.send(json.dumps(frame))
        again = await _until_done(ws, reply)
    assert again == live  # the same events, the same ids
    held = {f["event_id"]: f for f in live[:3]} | {f["event_id"]: f for f in again}
    joined = "".join(f["content"] for _, f in sorted(held.items()) if f["type"] == "token")
    assert joined == answer
    assert len(worker.requests) == 1


async def test_a_repeat_of_a_reply_stored_final_before_its_end_is_published_follows_it(
    gateway_url: str, backends: Any, worker: Any, js: Any, settings: Any
) -> None:
    # Memory stores a reply final a moment before its worker publishes its end (or a
    # redelivery publishes it again). A client that saw part of it and sends the message
    # again then is given the reply's events from the stream and its end when it comes,
    # not the stored text as a token below its part (the text twice over).
    await topology.ensure_streams(js, settings.model_copy(update={"dedupe_window_seconds": 0.2}))
    earlier = {"type": "message", "conversation_id": "wsend", "content": "before", "id": "m-0"}
    frame = {"type": "message", "conversation_id": "wsend", "content": "e f g", "id": "m-5"}
    reply = ids.reply_id("wsend", "m-5")
    async with _ws(gateway_url) as first:
        await first.send(json.dumps(earlier))  # an answer before it, in the stream too
        await _until_done(first, ids.reply_id("wsend", "m-0"))
        worker.hold = asyncio.Event()
        await first.send(json.dumps(frame))
        seen: list[dict[str, Any]] = []
        while not any(f.get("type") == "status" for f in seen):
            seen.append(await _recv(first))
        answer = "echo: e f g"  # what the fake worker answers
        stored = _stored(reply, "assistant").model_copy(update={"content": answer})
        backends.add_conversation("wsend", (_stored("m-5", "user"), stored))
        await asyncio.sleep(0.5)  # past the window: memory tells it is answered
        async with _ws(gateway_url) as second:
            await second.send(json.dumps(frame))
            replayed = await _recv(second)
            worker.hold.set()
            started = [f for f in seen if f.get("message_id") == reply]
            live = await _until_done(first, reply, started)
            again = [replayed]
            while again[-1].get("message_id") != reply or again[-1]["type"] != "done":
                again.append(await _recv(second))
    # The reply's own events, its ids, from its start to its end: nothing of the answer
    # before it (the socket followed nothing of the conversation). Presence is no event.
    assert [f for f in again if "event_id" in f] == live
    joined = "".join(f["content"] for f in again if f["type"] == "token")
    assert joined == answer
    assert [r.user_message_id for r in worker.requests] == ["m-0", "m-5"]  # once each
