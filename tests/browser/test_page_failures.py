"""Failures the page shows as such: a message the server refuses, an answer that fails."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, expect

# No Groq key is set, so every answer fails with an `error` event; messages are short.
STACK_ENV = {"LIVECHAT_DEFAULT_MODEL": "groq-llama-8b", "LIVECHAT_MAX_MESSAGE_CHARS": "60"}


def test_a_refused_message_is_marked_failed_with_the_reason(chat: Any) -> None:
    page: Page = chat.page
    expect(page.locator("#connection")).to_have_text("Connected")
    chat.send("x" * 61)
    mine = chat.user_messages().last
    expect(mine).to_have_attribute("data-status", "failed")
    expect(mine.locator(".meta")).to_contain_text("60")
    expect(mine.get_by_role("button", name=re.compile("^Retry"))).to_be_visible()
    expect(page.locator("#status-line")).to_contain_text("Not sent")
    expect(chat.answers()).to_have_count(0)


def test_an_answer_that_fails_shows_the_reason_and_can_be_tried_again(chat: Any) -> None:
    page: Page = chat.page
    chat.send("Hello there")
    assert chat.wait_final() == "failed"
    answer = chat.last_answer()
    expect(answer.locator(".meta")).to_contain_text("not available")
    expect(page.locator("#status-line")).to_contain_text("The answer failed")
    expect(page.locator("#announcer")).to_contain_text("failed")
    # The question itself was accepted.
    expect(chat.user_messages().last).to_have_attribute("data-status", "complete")
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible()

    answer.get_by_role("button", name=re.compile("^Retry")).click()
    expect(chat.user_messages()).to_have_count(2)
    expect(chat.answers()).to_have_count(2)
    assert chat.wait_final(chat.answers().nth(1)) == "failed"
