"""A shared conversation in two browsers (auth on): the owner lets a member in through
the members dialog; each sees the other's messages with their author; the takeover
switch stops the assistant's answers until it is handed back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect
from pydantic import SecretStr

from devstack.runner import DevStack
from gateway.access.issue_jwt import issue_token
from gateway.settings import GatewaySettings

SECRET = "browser-members-secret-0123456789abcdef"
STACK_ENV = {"LIVECHAT_JWT_SECRET": SECRET}
DEMO_TOKENS_PER_SECOND = 100
DESKTOP: ViewportSize = {"width": 1280, "height": 800}


def _token(user: str) -> str:
    return issue_token(GatewaySettings(jwt_secret=SecretStr(SECRET)), user)


@pytest.fixture
def open_as(browser: Browser, stack: DevStack, chat: Any) -> Iterator[Any]:
    """Opens the page (at `path`) in a browser profile of its own, signed in as `user`:
    the page's `ChatPage` helper."""
    contexts = []
    errors: list[str] = []

    def open_page(user: str, path: str = "/") -> Any:
        context = browser.new_context(viewport=DESKTOP, base_url=stack.gateway_url)
        context.set_default_timeout(30_000)
        token = _token(user)
        context.add_init_script(f"localStorage.setItem('livechat.token', {token!r})")
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(path)
        page.wait_for_selector("body[data-ready=true]")
        expect(page.locator("#connection")).to_have_text("Connected")
        return type(chat)(page, stack.gateway_url)

    try:
        yield open_page
    finally:
        for context in contexts:
            context.close()
    assert not errors, f"uncaught errors in the pages: {errors}"


def _stored(stack: DevStack, conversation: str, count: int) -> list[tuple[str, str | None]]:
    """The conversation's (role, author) as the server keeps it, once it holds `count`."""
    headers = {"Authorization": f"Bearer {_token('alice')}"}
    url = f"{stack.gateway_url}/v1/conversations/{conversation}"
    for _ in range(300):
        messages = httpx.get(url, headers=headers).json()["messages"]
        if len(messages) >= count:
            return [(m["role"], m.get("user_id")) for m in messages]
        time.sleep(0.1)
    raise AssertionError(f"{conversation} never held {count} messages")


def _author_of(page: Page, text: str) -> Any:
    message = page.locator("#messages li.user").filter(has_text=text)
    return expect(message.locator(".meta .author"))


def test_two_people_share_a_conversation_and_one_takes_over(open_as: Any, stack: DevStack) -> None:
    alice = open_as("alice")
    alice.send("Hello from alice")
    assert alice.wait_final() == "complete"
    conversation = alice.conversation_id()

    # The owner lets bob in through the members dialog.
    page = alice.page
    page.get_by_role("button", name="Members").click()
    dialog = page.locator("#members-dialog")
    expect(dialog.locator(".member")).to_have_count(1)
    dialog.get_by_label("Add someone by user id").fill("bob")
    dialog.get_by_role("button", name="Add").click()
    expect(dialog.locator(".member").filter(has_text="bob")).to_contain_text("member")
    dialog.get_by_role("button", name="Close").click()

    # Bob opens it: alice's message with her name, and its answer.
    bob = open_as("bob", f"/#c/{conversation}")
    _author_of(bob.page, "Hello from alice").to_have_text("alice")
    expect(bob.answers()).to_have_count(1)

    # Bob writes: alice sees it live with his name, and the answer both see.
    bob.send("Hello from bob")
    assert bob.wait_final() == "complete"
    _author_of(page, "Hello from bob").to_have_text("bob")
    _author_of(page, "Hello from alice").to_have_text("alice")
    expect(alice.answers()).to_have_count(2)
    assert alice.wait_final(alice.answers().nth(1)) == "complete"

    # Alice takes over: her message reaches bob, and the assistant does not answer it.
    takeover = page.get_by_role("button", name="Take over")
    takeover.click()
    handback = page.get_by_role("button", name="Hand back to the assistant")
    expect(handback).to_have_attribute("aria-pressed", "true")
    alice.send("A person answers from here")
    _author_of(bob.page, "A person answers from here").to_have_text("alice")
    expect(page.locator("#status-line")).to_contain_text("The assistant is off")
    expect(bob.page.get_by_role("button", name="Hand back to the assistant")).to_be_visible()

    # Handed back: bob's next message is answered again.
    handback.click()
    expect(page.get_by_role("button", name="Take over")).to_have_attribute("aria-pressed", "false")
    bob.send("Back to the assistant")
    assert bob.wait_final() == "complete"
    expect(alice.answers()).to_have_count(3)
    expect(bob.answers()).to_have_count(3)

    # As the server keeps it: no answer to the message sent while a person had taken over.
    assert _stored(stack, conversation, 7) == [
        ("user", "alice"),
        ("assistant", None),
        ("user", "bob"),
        ("assistant", None),
        ("user", "alice"),
        ("user", "bob"),
        ("assistant", None),
    ]
