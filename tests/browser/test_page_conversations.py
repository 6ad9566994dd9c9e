"""The conversation manager: list, open, search, rename, delete; and the layout at
375 px and on a desktop."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from devstack.runner import DevStack

# These tests do not race the answers: a quick demo model.
DEMO_TOKENS_PER_SECOND = 200


def _conversation(base_url: str, conversation_id: str, text: str) -> dict[str, Any]:
    """A conversation with one question and its answer, made through the public API."""
    response = httpx.post(
        f"{base_url}/v1/conversations/{conversation_id}/messages",
        json={"content": text},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# Texts whose colour is too close to their background: [text, ratio].
_LOW_CONTRAST = """
() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let n = el; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || c[3] > 0.5) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden" || el.closest(".visually-hidden, [hidden]")) continue;
    const a = lum(rgb(style.color).slice(0, 3));
    const b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) low.push([el.textContent.trim().slice(0, 40), ratio.toFixed(2)]);
  }
  return low;
}
"""


def _item(page: Page, title: str) -> Any:
    return page.locator("#conversation-list li").filter(has_text=title)


def test_switching_conversations_from_the_sidebar_shows_each_history(
    chat: Any, stack: DevStack
) -> None:
    page: Page = chat.page
    chat.send("Tell me about mountain rivers")
    chat.wait_final()
    rivers = chat.conversation_id()
    page.get_by_role("button", name="New conversation").click()
    expect(page.locator("#messages li.message")).to_have_count(0)
    chat.send("Explain desert cactus plants")
    chat.wait_final()
    cactus = chat.conversation_id()
    assert cactus != rivers

    items = page.locator("#conversation-list li")
    expect(items).to_have_count(2)
    # Newest first, each with its message count, tokens and a relative time.
    expect(items.nth(0)).to_contain_text("Explain desert cactus plants")
    expect(items.nth(1)).to_contain_text("Tell me about mountain rivers")
    stored = chat.stored(rivers, 2)
    facts = items.nth(1).locator(".facts")
    expect(facts).to_contain_text("2 messages")
    expect(facts).to_contain_text(f"{stored['total_tokens']} tokens")
    expect(facts).to_contain_text(re.compile(r"just now|\dm ago"))

    items.nth(1).locator(".open").click()
    expect(page.locator("#conversation-title")).to_have_text("Tell me about mountain rivers")
    expect(items.nth(1)).to_have_attribute("aria-current", "true")
    assert chat.conversation_id() == rivers
    expect(chat.user_messages()).to_have_count(1)
    expect(chat.user_messages().first).to_contain_text("Tell me about mountain rivers")
    expect(chat.answers()).to_have_count(1)
    assert chat.answer_text().split() == stored["messages"][1]["content"].split()
    expect(chat.last_answer().locator(".meta")).to_contain_text(
        f"{stored['messages'][1]['usage']['total_tokens']} tokens"
    )

    items.nth(0).locator(".open").click()
    expect(page.locator("#conversation-title")).to_have_text("Explain desert cactus plants")
    expect(chat.user_messages().first).to_contain_text("Explain desert cactus plants")
    assert chat.conversation_id() == cactus


def test_search_rename_and_delete_with_confirmation(chat: Any, stack: DevStack) -> None:
    page: Page = chat.page
    base = stack.gateway_url
    _conversation(base, "search-owls", "How do owls hunt at night")
    _conversation(base, "search-bread", "How do I bake sourdough bread")
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(_item(page, "owls")).to_have_count(1)

    page.get_by_label("Search conversations").fill("sourdough")
    expect(page.locator("#conversation-list li")).to_have_count(1)
    expect(_item(page, "sourdough")).to_have_count(1)
    page.get_by_label("Search conversations").fill("no such words anywhere")
    expect(page.locator("#conversation-list li")).to_have_count(0)
    expect(page.locator("#list-status")).to_contain_text("No conversation matches")
    page.get_by_label("Search conversations").fill("")
    expect(_item(page, "owls")).to_have_count(1)

    # Rename through the dialog.
    _item(page, "owls").get_by_role("button", name=re.compile("^Rename")).click()
    dialog = page.get_by_role("dialog", name="Rename conversation")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Title").fill("Night hunters")
    dialog.get_by_role("button", name="Save").click()
    expect(_item(page, "Night hunters")).to_have_count(1)
    assert httpx.get(f"{base}/v1/conversations/search-owls").json()["title"] == "Night hunters"

    # Open it, then delete it: cancelling keeps it, confirming removes it everywhere.
    _item(page, "Night hunters").locator(".open").click()
    expect(page.locator("#conversation-title")).to_have_text("Night hunters")
    _item(page, "Night hunters").get_by_role("button", name=re.compile("^Delete")).click()
    confirm = page.get_by_role("dialog", name="Delete conversation?")
    expect(confirm).to_contain_text("Night hunters")
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(_item(page, "Night hunters")).to_have_count(1)

    _item(page, "Night hunters").get_by_role("button", name=re.compile("^Delete")).click()
    confirm.get_by_role("button", name="Delete").click()
    expect(_item(page, "Night hunters")).to_have_count(0)
    expect(page.locator("#conversation-title")).to_have_text("New conversation")
    assert httpx.get(f"{base}/v1/conversations/search-owls").status_code == 404
    expect(_item(page, "sourdough")).to_have_count(1)


def test_the_page_works_at_375_px_and_on_a_desktop_by_keyboard(
    chat: Any, stack: DevStack, screenshot: Any
) -> None:
    page: Page = chat.page
    _conversation(stack.gateway_url, "layout-1", "What makes a good **cup** of tea")
    page.goto("/#c/layout-1")
    page.wait_for_selector("body[data-ready=true]")
    expect(chat.answers()).to_have_count(1)
    screenshot(page, "desktop")

    # Every control has a name a screen reader can say.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll("button, input, textarea")]
          .filter((el) => el.getClientRects().length)
          .filter((el) => !(el.labels?.length || el.getAttribute("aria-label")
                            || el.textContent.trim()))
          .map((el) => el.outerHTML)"""
    )
    assert unnamed == []

    # Every visible text has at least 4.5:1 contrast with what is behind it (WCAG AA).
    low = page.evaluate(_LOW_CONTRAST)
    assert low == []

    # Keyboard: from the message box, Tab reaches Send, and focus is visible.
    chat.input.focus()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "send"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"

    page.emulate_media(reduced_motion="reduce")  # no drawer animation in screenshots
    page.set_viewport_size({"width": 375, "height": 740})
    expect(page.get_by_role("button", name="Conversations")).to_be_visible()
    expect(page.locator("#sidebar")).not_to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    assert page.evaluate("document.getElementById('sidebar').inert") is True
    expect(chat.input).to_be_in_viewport()
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_in_viewport()
    screenshot(page, "phone-chat")

    page.get_by_role("button", name="Conversations").click()
    expect(page.get_by_role("button", name="Conversations")).to_have_attribute(
        "aria-expanded", "true"
    )
    expect(_item(page, "tea").locator(".open")).to_be_in_viewport()
    screenshot(page, "phone-conversations")
    page.keyboard.press("Escape")
    expect(page.locator("#sidebar")).not_to_be_in_viewport()

    chat.send("And green tea?")
    assert chat.wait_final() == "complete"
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
