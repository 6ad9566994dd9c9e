"""The page with auth on: a token field, kept in this browser, sent as a bearer
header and as `access_token` on the WebSocket."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import Page, expect
from pydantic import SecretStr

from devstack.runner import DevStack
from gateway.access.issue_jwt import issue_token
from gateway.settings import GatewaySettings

SECRET = "browser-test-secret-0123456789abcdef"
STACK_ENV = {"LIVECHAT_JWT_SECRET": SECRET}
DEMO_TOKENS_PER_SECOND = 100


def _token(user: str) -> str:
    return issue_token(GatewaySettings(jwt_secret=SecretStr(SECRET)), user)


def test_with_auth_on_the_page_asks_for_a_token_and_then_chats(chat: Any, stack: DevStack) -> None:
    page: Page = chat.page
    expect(page.locator("#banner")).to_contain_text("needs an access token")
    token_field = page.get_by_label("Access token", exact=False)
    expect(token_field).to_be_focused()

    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    token_field.fill(_token("alice"))
    page.get_by_role("button", name="Save token").click()
    expect(page.locator("#banner")).to_be_hidden()
    expect(page.locator("#connection")).to_have_text("Connected")
    assert any("access_token=" in url for url in sockets)

    chat.send("Tell me about auroras")
    assert chat.wait_final() == "complete"
    conversation_id = chat.conversation_id()
    base = stack.gateway_url
    assert httpx.get(f"{base}/v1/conversations/{conversation_id}").status_code == 401
    mine = httpx.get(
        f"{base}/v1/conversations/{conversation_id}",
        headers={"Authorization": f"Bearer {_token('alice')}"},
    )
    assert mine.status_code == 200
    assert chat.answer_text().split() == mine.json()["messages"][-1]["content"].split()

    # The token is kept across a reload; the history loads with it.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#banner")).to_be_hidden()
    expect(chat.answers()).to_have_count(1)
    expect(page.locator("#conversation-list li")).to_have_count(1)

    # Another user sees nothing of it.
    page.get_by_role("button", name="Access token").click()
    page.get_by_label("Access token", exact=False).fill(_token("bob"))
    page.get_by_role("button", name="Save token").click()
    expect(page.locator("#conversation-list li")).to_have_count(0)
    expect(chat.answers()).to_have_count(0)
    expect(page.locator("#messages")).not_to_contain_text("auroras")
