"""Read receipts on the page: it marks the newest message it shows as read, shows
"Seen by …" under the last message each other user has read (stored, and live), and
counts the unread answers of the other conversations in the list.

Until conversations have several members, another user's read state is put where a
member's would come from: a `read` signal on NATS (as another gateway relays it) and
a row in memory's database (as memory stores it).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import Any

import httpx
import nats
from playwright.sync_api import Page, expect

from contracts import ids, subjects
from contracts.signals import ReadSignal
from devstack.runner import DevStack

DEMO_TOKENS_PER_SECOND = 200


def _read_by(base_url: str, conversation_id: str, wanted: dict[str, str]) -> dict[str, str]:
    deadline = time.monotonic() + 30
    read_by: dict[str, str] = {}
    while time.monotonic() < deadline:
        read_by = httpx.get(f"{base_url}/v1/conversations/{conversation_id}").json()["read_by"]
        if read_by == wanted:
            return read_by
        time.sleep(0.1)
    raise AssertionError(f"read_by stayed {read_by}, not {wanted}")


def _others_read(stack: DevStack, conversation_id: str, user: str, message_id: str) -> None:
    """`user`'s read, live, as a gateway publishes it (the test's loop is Playwright's:
    NATS is spoken from a thread of its own)."""

    async def publish() -> None:
        nc = await nats.connect(stack.nats_nodes[0].url)
        signal = ReadSignal(
            conversation_id=conversation_id,
            user_id=user,
            client_id=ids.new_id(),
            message_id=message_id,
        )
        await nc.publish(subjects.signals(conversation_id), signal.model_dump_json().encode())
        await nc.flush()
        await nc.close()

    thread = threading.Thread(target=lambda: asyncio.run(publish()))
    thread.start()
    thread.join(30)


def _stored_read(stack: DevStack, conversation_id: str, user: str, message_id: str) -> None:
    """`user`'s read as memory stores it."""
    with sqlite3.connect(stack.settings.data_dir / "memory.db", timeout=30) as db:
        db.execute(
            "INSERT INTO read_state VALUES (?, ?, ?, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
            (conversation_id, user, message_id),
        )


def test_the_page_marks_what_it_shows_read_and_shows_who_else_has(
    chat: Any, stack: DevStack
) -> None:
    page: Page = chat.page
    chat.send("Tell me about lighthouses")
    assert chat.wait_final() == "complete"
    conversation = chat.conversation_id()
    question, answer = (m["id"] for m in chat.stored(conversation, 2)["messages"])

    # Shown, so read: the newest message is the page user's read position.
    _read_by(stack.gateway_url, conversation, {"local": answer})
    receipts = page.locator("#messages .receipt")
    expect(receipts).to_have_count(0)  # one's own reads are not shown

    # Another user's reads, live: the mark follows them.
    question_li = page.locator(f'#messages li[data-id="{question}"]')
    answer_li = page.locator(f'#messages li[data-id="{answer}"]')
    _others_read(stack, conversation, "bob", question)
    expect(question_li.locator(".receipt")).to_have_text("Seen by bob")
    _others_read(stack, conversation, "bob", answer)
    expect(answer_li.locator(".receipt")).to_have_text("Seen by bob")
    expect(receipts).to_have_count(1)

    # As stored: shown when the conversation is opened again.
    _stored_read(stack, conversation, "bob", question)
    _stored_read(stack, conversation, "carol", answer)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(question_li.locator(".receipt")).to_have_text("Seen by bob")
    expect(answer_li.locator(".receipt")).to_have_text("Seen by carol")

    # An answer in a conversation not shown is counted unread in the list.
    page.get_by_role("button", name="New conversation").click()
    reply = httpx.post(
        f"{stack.gateway_url}/v1/conversations/{conversation}/messages",
        json={"content": "And about harbours?"},
        timeout=60,
    )
    assert reply.status_code == 200
    newest = reply.json()["message"]["id"]
    chat.stored(conversation, 4)
    page.reload()  # the list as it is now
    page.wait_for_selector("body[data-ready=true]")
    listed = page.locator(f'#conversation-list li[data-id="{conversation}"]')
    expect(listed.locator(".unread")).to_have_text("1 unread")
    # Opened: read (the others' marks stay where they were).
    listed.locator(".open").click()
    _read_by(stack.gateway_url, conversation, {"local": newest, "bob": question, "carol": answer})
    expect(answer_li.locator(".receipt")).to_have_text("Seen by carol")
