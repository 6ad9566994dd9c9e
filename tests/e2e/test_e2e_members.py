"""Shared conversations on the whole system with auth on: the owner lets a member and a
viewer in; members send and are answered, viewers read and attach, strangers get 404;
a person takes over from the assistant and hands back; changes hold at once on every
gateway (two gateway processes, grants remembered for an hour)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from apiclients import bearer
from sioclient import connected
from stacks import FAST_ENV, stored_conversation, two_gateways, wait_ready

from contracts import ids

SECRET = "members-test-secret-0123456789abcdef"


ALICE, BOB, CAROL, DAVE = (bearer(SECRET, user) for user in ("alice", "bob", "carol", "dave"))


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The system plus a second gateway on its nats-server: both base URLs."""
    # Grants remembered for an hour: only an announced change makes a gateway forget one.
    env = {**FAST_ENV, "LIVECHAT_JWT_SECRET": SECRET, "LIVECHAT_OWNER_CACHE_TTL_SECONDS": "3600"}
    with two_gateways(tmp_path_factory.mktemp("members"), env) as urls:
        yield urls


def _ws(base_url: str, user: dict[str, str]) -> Any:
    return websockets.connect(
        base_url.replace("http://", "ws://") + "/v1/ws", additional_headers=user
    )


async def _frame(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return frame


async def _until(ws: Any, wanted: str) -> list[dict[str, Any]]:
    """The frames up to and with the first of type `wanted`."""
    frames = [await _frame(ws)]
    while frames[-1]["type"] != wanted:
        frames.append(await _frame(ws))
    return frames


async def _subscribed(ws: Any, conversation: str) -> None:
    await ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation}))
    await ws.send(json.dumps({"type": "ping"}))
    await _until(ws, "pong")


def _refused(reply: httpx.Response, status: int, code: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code, reply.text


async def test_members_and_viewers_share_a_conversation_and_a_person_takes_over(
    gateways: tuple[str, str],
) -> None:
    here_url, there_url = gateways
    await wait_ready(there_url)
    conv = f"shared-{uuid.uuid4().hex[:8]}"
    path = f"/v1/conversations/{conv}"
    async with (
        httpx.AsyncClient(base_url=here_url, timeout=60) as here,
        httpx.AsyncClient(base_url=there_url, timeout=60) as there,
    ):
        first = await here.post(f"{path}/messages", json={"content": "hello"}, headers=ALICE)
        assert first.status_code == 200, first.text

        # The owner adds a member and a viewer; nobody else adds anyone.
        added = await here.post(f"{path}/members", json={"user_id": "bob"}, headers=ALICE)
        assert added.status_code == 201, added.text
        assert added.json() == {"user_id": "bob", "role": "member"}
        viewer = {"user_id": "carol", "role": "viewer"}
        assert (await here.post(f"{path}/members", json=viewer, headers=ALICE)).json() == viewer
        by_member = await here.post(f"{path}/members", json={"user_id": "dave"}, headers=BOB)
        _refused(by_member, 403, "forbidden")
        bad_role = {"user_id": "dave", "role": "owner"}
        _refused(
            await here.post(f"{path}/members", json=bad_role, headers=ALICE),
            422,
            "validation_error",
        )
        listed = await there.get(f"{path}/members", headers=CAROL)
        assert listed.json() == {
            "members": [
                {"user_id": "alice", "role": "owner"},
                {"user_id": "bob", "role": "member"},
                {"user_id": "carol", "role": "viewer"},
            ]
        }

        # A stranger sees nothing of it, whatever the route.
        for reply in (
            await here.get(path, headers=DAVE),
            await here.get(f"{path}/members", headers=DAVE),
            await here.post(f"{path}/members", json={"user_id": "dave"}, headers=DAVE),
            await here.post(f"{path}/messages", json={"content": "in?"}, headers=DAVE),
            await here.patch(path, json={"assistant": "off"}, headers=DAVE),
        ):
            _refused(reply, 404, "not_found")
            assert "hello" not in reply.text

        # Each lists it with their role; the stranger does not.
        for user, role in ((ALICE, "owner"), (BOB, "member"), (CAROL, "viewer")):
            listing = (await there.get("/v1/conversations", headers=user)).json()
            assert [(c["id"], c["role"]) for c in listing["conversations"]] == [(conv, role)]
        assert (await here.get("/v1/conversations", headers=DAVE)).json()["conversations"] == []

        async with _ws(there_url, CAROL) as carol_ws, _ws(here_url, BOB) as bob_ws:
            # The viewer attaches (on the other gateway) but may not send.
            await _subscribed(carol_ws, conv)
            sent = await here.post(f"{path}/messages", json={"content": "me?"}, headers=CAROL)
            _refused(sent, 403, "forbidden")
            await carol_ws.send(
                json.dumps({"type": "message", "conversation_id": conv, "content": "x"})
            )
            refused = await _until(carol_ws, "error")
            assert refused[-1]["code"] == "forbidden", refused

            # The member sends and is answered; the viewer sees it all, with its author.
            asked = await here.post(f"{path}/messages", json={"content": "bob asks"}, headers=BOB)
            assert asked.status_code == 200, asked.text
            answer = asked.json()["message"]
            assert answer["role"] == "assistant" and answer["content"]
            seen = await _until(carol_ws, "done")
            echoed = [f for f in seen if f["type"] == "message"]
            assert [(f["content"], f["user_id"]) for f in echoed] == [("bob asks", "bob")]
            tokens = "".join(f["content"] for f in seen if f["type"] == "token")
            assert tokens == answer["content"]

            # A member takes over: stored and shown to every attached client, not answered.
            await _subscribed(bob_ws, conv)
            off = await there.patch(path, json={"assistant": "off"}, headers=BOB)
            assert off.status_code == 200, off.text
            assert off.json()["assistant"] == "off"
            _refused(
                await here.patch(path, json={"assistant": "on"}, headers=CAROL), 403, "forbidden"
            )
            taken = await here.post(
                f"{path}/messages", json={"content": "a person here"}, headers=ALICE
            )
            assert taken.status_code == 202, taken.text
            held = taken.json()["message"]
            assert (held["role"], held["content"], held["user_id"]) == (
                "user",
                "a person here",
                "alice",
            )
            # Over the WebSocket too: the message is relayed, nothing is generated.
            frame = {"type": "message", "conversation_id": conv, "content": "me too"}
            await bob_ws.send(json.dumps(frame))
            while (echo := await _frame(bob_ws)).get("content") != "me too":
                assert echo["type"] not in ("start", "token", "error"), echo
            assert (echo["type"], echo["user_id"], echo["unanswered"]) == ("message", "bob", True)
            # Handed back: the next message is answered again.
            on = await here.patch(path, json={"assistant": "on"}, headers=ALICE)
            assert on.json()["assistant"] == "on"
            back = await there.post(f"{path}/messages", json={"content": "answer me"}, headers=BOB)
            assert back.status_code == 200, back.text
            # The viewer saw both messages while off, then the next one's answer: no
            # generation started in between.
            seen = await _until(carol_ws, "done")
            kinds = [
                (f["type"], f.get("content"), f.get("user_id"))
                for f in seen
                if f["type"] in ("message", "start")
            ]
            assert kinds == [
                ("message", "a person here", "alice"),
                ("message", "me too", "bob"),
                ("message", "answer me", "bob"),
                ("start", None, None),
            ]
            assert [f.get("unanswered", False) for f in seen if f["type"] == "message"] == [
                True,
                True,
                False,
            ]

            # History shows every author, and no answer to the messages sent while off.
            history = await stored_conversation(here_url, conv, 8, ALICE)
            assert [(m["role"], m.get("user_id")) for m in history["messages"]] == [
                ("user", "alice"),
                ("assistant", None),
                ("user", "bob"),
                ("assistant", None),
                ("user", "alice"),
                ("user", "bob"),
                ("user", "bob"),
                ("assistant", None),
            ]
            replies = {m["id"] for m in history["messages"] if m["role"] == "assistant"}
            assert ids.reply_id(conv, held["id"]) not in replies

            # Removed through one gateway: at once a 404 on the other one, which had
            # let bob in before, and his socket's subscription ends.
            assert (await there.get(path, headers=BOB)).status_code == 200
            removed = await here.delete(f"{path}/members/bob", headers=ALICE)
            assert removed.status_code == 204, removed.text
            gone = await _until(bob_ws, "error")
            assert gone[-1]["code"] == "not_found", gone
            _refused(await there.get(path, headers=BOB), 404, "not_found")
            sent = await there.post(f"{path}/messages", json={"content": "still?"}, headers=BOB)
            _refused(sent, 404, "not_found")
            _refused(await here.delete(f"{path}/members/bob", headers=ALICE), 404, "not_found")

        # The viewer leaves; a member may not delete the conversation; the owner does.
        assert (await there.delete(f"{path}/members/carol", headers=CAROL)).status_code == 204
        _refused(await here.get(path, headers=CAROL), 404, "not_found")
        await here.post(f"{path}/members", json={"user_id": "bob"}, headers=ALICE)
        _refused(await there.delete(f"{path}/members/alice", headers=BOB), 403, "forbidden")
        _refused(await there.delete(path, headers=BOB), 403, "forbidden")
        assert (await here.delete(path, headers=ALICE)).status_code == 204
        _refused(await there.get(path, headers=BOB), 404, "not_found")


async def test_a_removed_member_leaves_the_socket_io_room_on_every_gateway(
    gateways: tuple[str, str],
) -> None:
    here_url, there_url = gateways
    await wait_ready(there_url)
    conv = f"room-{uuid.uuid4().hex[:8]}"
    path = f"/v1/conversations/{conv}"
    bob_token = BOB["Authorization"].removeprefix("Bearer ")
    alice_token = ALICE["Authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(base_url=here_url, timeout=60) as here:
        assert (
            await here.post(f"{path}/messages", json={"content": "hi"}, headers=ALICE)
        ).is_success
        await here.post(f"{path}/members", json={"user_id": "bob"}, headers=ALICE)
        async with (
            connected(there_url, ["websocket"], auth={"token": bob_token}) as bob,
            connected(there_url, ["websocket"], auth={"token": alice_token}) as alice,
        ):
            joined = await bob.call("join-room", {"roomName": conv})
            assert joined == {"ok": True, "roomName": conv}, joined
            assert (await alice.call("join-room", {"roomName": conv}))["ok"]
            sent = await here.post(f"{path}/messages", json={"content": "one"}, headers=ALICE)
            assert sent.status_code == 200, sent.text
            [complete] = await bob.until("stream-complete")
            assert complete["fullResponse"] == sent.json()["message"]["content"]

            removed = await here.delete(f"{path}/members/bob", headers=ALICE)
            assert removed.status_code == 204, removed.text
            [gone] = await bob.until("stream-error")
            assert (gone["code"], gone["roomName"]) == ("not_found", conv), gone
            # Answered after the removal: it reaches alice's socket in the room on the same
            # gateway (the same relay), nothing of it bob's.
            after = await here.post(f"{path}/messages", json={"content": "two"}, headers=ALICE)
            assert after.status_code == 200, after.text
            await alice.until("stream-complete", 2)
            assert len([e for e in bob.names() if e == "stream-complete"]) == 1, bob.events
            # Joining again is refused as for a stranger.
            again = await bob.call("join-room", {"roomName": conv})
            assert again["error"]["code"] == "not_found", again
            # Deleted: the owner's socket leaves the room too, told so (a conversation
            # created again under this id is another one's).
            assert (await here.delete(path, headers=ALICE)).status_code == 204
            [*_, deleted] = await alice.until("stream-error")
            assert (deleted["code"], deleted["roomName"]) == ("not_found", conv), deleted
