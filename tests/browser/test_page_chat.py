"""Chatting on the page: streaming, markdown that cannot inject, live and standard mode."""

from __future__ import annotations

import re
from typing import Any

from playwright.sync_api import Page, Route, expect

# One generation at a time, so a second one is visibly queued.
STACK_ENV = {"LIVECHAT_MAX_CONCURRENCY": "1"}

# One recorder per page: every state a reply's bubble was seen in, in order.
_RECORD_STATES = """
() => {
  window.__seen = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const nodes = r.type === "attributes" ? [r.target] : [...r.addedNodes];
      for (const n of nodes) {
        if (n.nodeType !== 1 || !n.matches("li.assistant")) continue;
        if (window.__seen.at(-1) !== n.dataset.status) window.__seen.push(n.dataset.status);
      }
    }
  }).observe(document.getElementById("messages"), {
    subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"],
  });
}
"""


def test_a_message_streams_token_by_token_and_equals_the_stored_answer(chat: Any) -> None:
    page: Page = chat.page
    chat.input.fill("Tell me about mountain rivers")
    chat.input.press("Shift+Enter")  # a new line, not a send
    chat.input.type("and glacier lakes")
    expect(chat.user_messages()).to_have_count(0)
    chat.input.press("Enter")

    # The user's message shows at once, the box is emptied for the next one.
    mine = chat.user_messages().last
    expect(mine.locator(".content")).to_contain_text("glacier lakes")
    assert (
        mine.locator(".content").text_content()
        == "Tell me about mountain rivers\nand glacier lakes"
    )
    expect(chat.input).to_have_value("")
    expect(page.locator("#connection")).to_have_text("Connected")

    answer = chat.last_answer()
    early = chat.wait_words(3)
    expect(answer.locator(".cursor")).to_be_visible()
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    later = chat.wait_words(len(early.split()) + 5)
    assert later.startswith(early.rstrip()), "the answer grows at its end, token by token"

    assert chat.wait_final() == "complete"
    expect(answer.locator(".cursor")).to_have_count(0)
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible()

    conversation_id = chat.conversation_id()
    stored = chat.stored(conversation_id, 2)
    reply = stored["messages"][-1]
    assert reply["role"] == "assistant"
    assert chat.answer_text().split() == reply["content"].split()
    usage = reply["usage"]["total_tokens"]
    meta = answer.locator(".meta")
    expect(meta).to_contain_text(f"{usage} tokens")
    expect(meta).to_contain_text(reply["provider"])
    expect(meta).to_contain_text(reply["model"])
    expect(meta.locator("time")).to_have_text(re.compile(r"\d"))
    expect(page.locator("#conversation-tokens")).to_have_text(
        f"{usage} tokens in this conversation"
    )
    # The finished answer is announced to screen readers.
    expect(page.locator("#announcer")).to_contain_text(reply["content"].split()[0])


def test_markup_in_a_message_shows_as_text_and_never_runs(chat: Any) -> None:
    page: Page = chat.page
    text = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> hi'
    chat.send(text)
    expect(chat.user_messages().last.locator(".content")).to_have_text(text)
    chat.wait_final()
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#messages script, #messages img").count() == 0

    # Answers are markdown: formatted, but still escaped first.
    html = page.evaluate(
        """async () => {
          const { renderMarkdown } = await import("/static/js/markdown.js");
          return renderMarkdown([
            "# Title", "", "- one", "- **two**", "", "1. first", "2. second", "",
            "```js", "if (a < b) alert('<b>')", "```",
            "<script>alert(1)</script> and `<i>code</i>`",
            "[ok](https://example.org) [bad](javascript:alert(1))",
          ].join("\\n"));
        }"""
    )
    assert "<h3>Title</h3>" in html
    assert "<ul><li>one</li><li><strong>two</strong></li></ul>" in html
    assert "<ol><li>first</li><li>second</li></ol>" in html
    assert (
        '<pre><code class="language-js">if (a &lt; b) alert(&#39;&lt;b&gt;&#39;)</code></pre>'
        in html
    )
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<code>&lt;i&gt;code&lt;/i&gt;</code>" in html
    assert '<a href="https://example.org"' in html
    assert "javascript:" not in html.replace("(javascript:alert(1))", "")
    assert "<script" not in html and "<i>" not in html


def test_standard_mode_answers_in_one_piece_and_live_mode_streams(chat: Any) -> None:
    page: Page = chat.page
    page.get_by_label("Standard").check()
    expect(page.locator("#connection")).to_have_text("Standard (JSON)")
    page.evaluate(_RECORD_STATES)
    with page.expect_response(re.compile(r"/v1/conversations/[^/]+/messages$")) as posted:
        chat.send("Explain volcanic islands")
    response = posted.value
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert chat.wait_final() == "complete"
    assert chat.answer_text().split() == body["message"]["content"].split()
    assert page.evaluate("window.__seen") == ["complete"], "no streaming in standard mode"
    expect(chat.last_answer().locator(".meta")).to_contain_text(
        f"{body['usage']['total_tokens']} tokens"
    )

    # The choice is kept; live mode streams the next answer over the WebSocket.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(page.get_by_label("Standard")).to_be_checked()
    page.get_by_label("Live").check()
    expect(page.locator("#connection")).to_have_text("Connected")
    expect(chat.answers()).to_have_count(1)
    page.evaluate(_RECORD_STATES)
    chat.send("Explain coral reefs")
    chat.wait_words(3, chat.answers().nth(1))
    assert chat.wait_final(chat.answers().nth(1)) == "complete"
    assert page.evaluate("window.__seen") == ["streaming", "complete"]
    stored = chat.stored(chat.conversation_id(), 4)
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"] * 2


def test_a_message_that_cannot_reach_the_server_waits_and_goes_once_it_can(chat: Any) -> None:
    page: Page = chat.page
    page.get_by_label("Standard").check()
    dropped: list[str] = []

    def drop(route: Route) -> None:
        dropped.append(route.request.url)
        route.abort("internetdisconnected")

    page.route(re.compile(r"/v1/conversations/[^/]+/messages$"), drop)
    chat.send("Is anybody there?")
    mine = chat.user_messages().last
    expect(mine).to_have_attribute("data-status", "waiting")
    expect(mine.locator(".meta")).to_contain_text("waiting to send")
    assert dropped
    expect(page.locator("#status-line")).to_contain_text("will be sent when the connection")

    # Tried again by itself (with the same id) once the server can be reached.
    page.unroute(re.compile(r"/v1/conversations/[^/]+/messages$"))
    expect(mine).to_have_attribute("data-status", "complete")
    assert chat.wait_final() == "complete"
    expect(chat.user_messages()).to_have_count(1)
    stored = chat.stored(chat.conversation_id(), 2)
    assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == [
        "Is anybody there?"
    ]


def test_stop_mid_answer_keeps_the_partial_answer_marked_stopped(chat: Any) -> None:
    page: Page = chat.page
    chat.send("Tell me everything about lighthouses")
    shown = chat.wait_words(5)
    page.get_by_role("button", name="Stop").click()

    assert chat.wait_final() == "cancelled"
    answer = chat.last_answer()
    expect(answer.locator(".meta")).to_contain_text("stopped")
    expect(page.locator("#status-line")).to_contain_text("Stopped")
    expect(page.get_by_role("button", name="Send", exact=True)).to_be_visible()
    kept = chat.answer_text()
    assert kept.startswith(shown.rstrip())
    stored = chat.stored(chat.conversation_id(), 2)
    reply = stored["messages"][-1]
    assert reply["status"] == "cancelled"
    assert kept.split() == reply["content"].split()
    # Far from the whole answer: the demo model's answers run to ~120 words.
    assert len(kept.split()) < 100


def test_another_tab_sees_presence_typing_and_the_same_answer(chat: Any, screenshot: Any) -> None:
    first: Page = chat.page
    chat.send("How do tides work")
    chat.wait_final()
    conversation_id = chat.conversation_id()

    second = first.context.new_page()
    second.goto(f"/#c/{conversation_id}")
    second.wait_for_selector("body[data-ready=true]")
    expect(second.locator("#messages li.assistant")).to_have_count(1)
    expect(first.locator("#presence")).to_have_text("1 other tab here")

    second.get_by_label("Message", exact=True).press_sequentially("Also the moon")
    expect(first.locator("#typing")).to_contain_text("typing")

    chat.send("And what about the moon")
    expect(second.locator("#messages li.user")).to_have_count(2)
    expect(second.locator("#messages li.user").last).to_contain_text("And what about the moon")
    expect(second.locator("#messages li.assistant").last).to_have_attribute(
        "data-status", "streaming"
    )
    screenshot(first, "desktop-streaming")
    assert chat.wait_final() == "complete"
    theirs = second.locator("#messages li.assistant").last
    expect(theirs).to_have_attribute("data-status", "complete")
    assert theirs.locator(".content").inner_text().split() == chat.answer_text().split()

    second.close()
    expect(first.locator("#presence")).to_be_hidden()


def test_a_second_answer_waits_visibly_queued_then_streams(chat: Any) -> None:
    first: Page = chat.page
    chat.send("Tell me about old sailing ships")
    chat.wait_words(3)

    other = first.context.new_page()
    other.goto("/")
    other.wait_for_selector("body[data-ready=true]")
    box = other.get_by_label("Message", exact=True)
    box.fill("Tell me about windmills")
    box.press("Enter")
    waiting = other.locator("#messages li.assistant").last
    expect(waiting.locator(".meta")).to_contain_text("queued")
    expect(other.locator("#status-line")).to_contain_text("queued")
    expect(waiting).to_have_attribute("data-status", "streaming")

    assert chat.wait_final() == "complete"
    expect(waiting).to_have_attribute("data-status", "complete", timeout=60_000)
    expect(waiting.locator(".meta")).not_to_contain_text("queued")
    assert len(waiting.locator(".content").inner_text().split()) > 10
    other.close()


def test_stop_in_standard_mode_returns_the_partial_answer_marked_stopped(chat: Any) -> None:
    page: Page = chat.page
    page.get_by_label("Standard").check()
    chat.send("Tell me everything about the history of maps")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible()
    page.wait_for_timeout(1500)  # some of the answer exists by now
    stop.click()

    assert chat.wait_final() == "cancelled"
    expect(chat.last_answer().locator(".meta")).to_contain_text("stopped")
    expect(page.locator("#status-line")).to_contain_text("Stopped")
    stored = chat.stored(chat.conversation_id(), 2)
    reply = stored["messages"][-1]
    assert reply["status"] == "cancelled"
    assert chat.answer_text().split() == reply["content"].split()
