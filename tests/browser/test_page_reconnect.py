"""A dropped connection or a reload in the middle of an answer: the page resumes
after the last event it showed, and the answer ends without a lost or doubled word. A
message written while offline waits in the page's outbox, through a reload, and is
sent once when the connection is back."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, Route, WebSocketRoute, expect

from devstack.runner import DevStack


def test_the_gateway_restarted_mid_answer_and_the_answer_completes(
    chat: Any, stack: DevStack
) -> None:
    page: Page = chat.page
    chat.send("Describe the water cycle of tropical forests")
    shown = chat.wait_words(6)

    stack.kill("gateway")
    expect(page.locator("#connection")).to_have_text("Reconnecting…")
    expect(page.locator("#status-line")).to_contain_text("reconnecting")
    # What was shown stays while the page is cut off.
    assert chat.answer_text().startswith(shown.rstrip())
    stack.restart("gateway")

    assert chat.wait_final(timeout=90_000) == "complete"
    expect(page.locator("#connection")).to_have_text("Connected")
    stored = chat.stored(chat.conversation_id(), 2)
    reply = stored["messages"][-1]
    assert chat.answer_text().split() == reply["content"].split()
    expect(chat.answers()).to_have_count(1)
    expect(chat.user_messages()).to_have_count(1)


def test_a_reload_mid_answer_shows_the_answer_continuing(chat: Any) -> None:
    page: Page = chat.page
    chat.send("Explain how bees find flowers")
    shown = chat.wait_words(5)
    conversation_id = chat.conversation_id()

    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert chat.conversation_id() == conversation_id
    expect(chat.user_messages()).to_have_count(1)
    answer = chat.last_answer()
    expect(answer).to_have_attribute("data-status", "streaming")
    assert chat.answer_text().startswith(shown.split()[0])

    assert chat.wait_final() == "complete"
    stored = chat.stored(conversation_id, 2)
    assert chat.answer_text().split() == stored["messages"][-1]["content"].split()
    expect(chat.answers()).to_have_count(1)


# A network where the WebSocket handshake never succeeds (as behind some proxies).
_NO_WEBSOCKET = """
window.WebSocket = class extends EventTarget {
  static OPEN = 1;
  constructor() {
    super();
    this.readyState = 3;
    setTimeout(() => {
      this.dispatchEvent(new Event("error"));
      this.dispatchEvent(new CloseEvent("close", { code: 1006 }));
    }, 10);
  }
  send() { throw new Error("not open"); }
  close() {}
};
"""


def test_without_websocket_live_mode_streams_over_sse_and_resumes_after_a_drop(
    chat: Any, stack: DevStack
) -> None:
    page: Page = chat.page
    page.add_init_script(_NO_WEBSOCKET)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#connection")).to_have_text("Live (SSE)")

    resumed: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            resumed.append(r.headers.get("last-event-id")) if r.url.endswith("/events") else None
        ),
    )
    chat.send("Describe the life of sea turtles")
    shown = chat.wait_words(6)
    expect(chat.last_answer().locator(".cursor")).to_be_visible()

    stack.kill("gateway")
    expect(page.locator("#status-line")).to_contain_text("reconnecting")
    stack.restart("gateway")

    assert chat.wait_final(timeout=90_000) == "complete"
    assert chat.answer_text().startswith(shown.rstrip())
    stored = chat.stored(chat.conversation_id(), 2)
    assert chat.answer_text().split() == stored["messages"][-1]["content"].split()
    expect(chat.answers()).to_have_count(1)
    # It resumed with GET .../events after the last event it had shown.
    assert resumed and all(value and value.isdigit() for value in resumed)


def test_leaving_a_conversation_mid_answer_and_coming_back_shows_it_whole(chat: Any) -> None:
    page: Page = chat.page
    chat.send("Explain the migration of monarch butterflies")
    chat.wait_words(4)
    conversation_id = chat.conversation_id()

    page.get_by_role("button", name="New conversation").click()
    expect(chat.answers()).to_have_count(0)
    page.wait_for_timeout(1000)  # the answer goes on meanwhile
    item = page.locator(f'#conversation-list li[data-id="{conversation_id}"]')
    item.locator(".open").click()

    assert chat.conversation_id() == conversation_id
    expect(chat.answers()).to_have_count(1)
    expect(chat.answers().first).to_have_attribute("data-status", "streaming")
    assert chat.wait_final(chat.answers().first) == "complete"
    stored = chat.stored(conversation_id, 2)
    text = chat.answers().first.locator(".content").inner_text()
    assert text.split() == stored["messages"][-1]["content"].split()


def test_switching_back_and_forth_mid_answer_never_loses_its_start(chat: Any) -> None:
    page: Page = chat.page
    chat.send("Tell the story of the longest river on earth")
    first_words = " ".join(chat.wait_words(4).split()[:4])
    conversation_id = chat.conversation_id()
    item = page.locator(f'#conversation-list li[data-id="{conversation_id}"]')
    starts_whole = re.compile(r"^\s*" + re.escape(first_words))

    # Away for a moment, or not at all: each time, the events that came meanwhile
    # (and those still on their way) join what was shown, in order.
    for away_ms in (0, 300, 50, 700, 0):
        page.get_by_role("button", name="New conversation").click()
        expect(chat.answers()).to_have_count(0)
        if away_ms:
            page.wait_for_timeout(away_ms)
        item.locator(".open").click()
        expect(chat.answers()).to_have_count(1)
        expect(chat.answers().first.locator(".content")).to_have_text(starts_whole)

    answer = chat.answers().first
    assert chat.wait_final(answer) == "complete"
    stored = chat.stored(conversation_id, 2)
    assert chat.answer_text(answer).split() == stored["messages"][-1]["content"].split()
    expect(chat.user_messages()).to_have_count(1)


def test_a_message_written_offline_survives_a_reload_and_is_sent_once(chat: Any) -> None:
    page: Page = chat.page
    context = page.context
    cut_off = True  # the server out of reach: its socket closes, its sends fail

    def socket(ws: WebSocketRoute) -> None:
        if cut_off:
            ws.close()
        else:
            ws.connect_to_server()

    def sends(route: Route) -> None:
        if cut_off and route.request.method == "POST":
            route.abort()
        else:
            route.continue_()

    context.route_web_socket(re.compile(r"/v1/ws"), socket)
    context.route(re.compile(r"/v1/conversations/[^/]+/messages$"), sends)
    context.set_offline(True)
    chat.send("Tell me about lighthouses")
    question = chat.user_messages()
    expect(question).to_have_attribute("data-status", "waiting")
    expect(question.locator(".meta")).to_contain_text("waiting to send")
    conversation_id = chat.conversation_id()

    # Reloaded while the server is still out of reach: the message is still there.
    context.set_offline(False)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(question).to_have_count(1)
    expect(question.locator(".content")).to_have_text("Tell me about lighthouses")
    expect(question).to_have_attribute("data-status", "waiting")
    expect(chat.answers()).to_have_count(0)

    # Back: sent with its id, once, and answered.
    cut_off = False
    assert chat.wait_final(chat.answers().first, timeout=90_000) == "complete"
    expect(question).to_have_attribute("data-status", "complete")
    stored = chat.stored(conversation_id, 2)["messages"]
    assert [(m["role"], m["content"]) for m in stored][:1] == [
        ("user", "Tell me about lighthouses")
    ]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert chat.answer_text(chat.answers().first).split() == stored[1]["content"].split()
    expect(question).to_have_count(1)
    expect(chat.answers()).to_have_count(1)
    assert page.evaluate("localStorage.getItem('livechat.outbox')") is None
