"""The controls under the messages on the page: branches (regenerate an answer, edit a
question, switch between the versions of a turn with the "n/m" switcher) and feedback
(like / dislike and a comment on an answer)."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

# These tests do not race the answers: a quick demo model.
DEMO_TOKENS_PER_SECOND = 200


def test_regenerate_edit_and_switch_versions(chat: Any) -> None:
    page: Page = chat.page
    chat.send("Tell me about mountain rivers")
    chat.wait_final()
    conversation_id = chat.conversation_id()
    first = chat.stored(conversation_id, 2)["messages"][1]["id"]
    answer = page.locator("#messages li.assistant")
    question = page.locator("#messages li.user")

    # Regenerate: a second version of the answer, shown as 2/2.
    answer.get_by_role("button", name="Regenerate this answer").click()
    expect(answer.locator(".sibling-count")).to_have_text("2/2")
    expect(answer).to_have_count(1)
    chat.wait_final(answer)
    second = answer.get_attribute("data-id")
    assert second not in (None, first)
    stored = chat.stored(conversation_id, 2)["messages"]
    assert [m["id"] for m in stored] == [stored[0]["id"], second]

    # Back to the first version: the page and the server's active branch agree.
    answer.get_by_role("button", name="Previous version").click()
    expect(answer.locator(".sibling-count")).to_have_text("1/2")
    expect(answer).to_have_attribute("data-id", first)
    assert chat.stored(conversation_id, 2)["messages"][1]["id"] == first

    # Edit the question: a new branch from there, answered from the edited text.
    question.get_by_role("button", name="Edit: Tell me about mountain rivers").click()
    expect(chat.input).to_have_value("Tell me about mountain rivers")
    chat.input.fill("Tell me about desert plants")
    chat.input.press("Enter")
    expect(question.locator(".sibling-count")).to_have_text("2/2")
    expect(question).to_have_count(1)
    expect(question.locator(".content")).to_have_text("Tell me about desert plants")
    chat.wait_final(answer)
    assert "desert" in chat.answer_text(answer).lower()
    expect(answer.locator(".siblings")).to_have_count(0)  # the new branch's only answer

    # The first question's branch is still there, with both of its answers (shown
    # down its newest one).
    question.get_by_role("button", name="Previous version").click()
    expect(question.locator(".content")).to_have_text("Tell me about mountain rivers")
    expect(question.locator(".sibling-count")).to_have_text("1/2")
    expect(answer.locator(".sibling-count")).to_have_text("2/2")
    expect(answer).to_have_attribute("data-id", str(second))


def test_like_dislike_and_comment_on_an_answer_survive_a_reload(chat: Any) -> None:
    page: Page = chat.page
    chat.send("Tell me about tides")
    chat.wait_final()
    conversation_id = chat.conversation_id()
    answer = page.locator("#messages li.assistant")
    good = answer.get_by_role("button", name="Good answer")
    bad = answer.get_by_role("button", name="Bad answer")

    def feedback() -> Any:
        return chat.stored(conversation_id, 2)["messages"][1].get("feedback")

    good.click()
    expect(good).to_have_attribute("aria-pressed", "true")
    expect(bad).to_have_attribute("aria-pressed", "false")
    assert feedback()["rating"] == "up"

    answer.get_by_role("button", name="Comment on this answer").click()
    dialog = page.get_by_role("dialog", name="Comment on this answer")
    dialog.get_by_label("What was good or bad about it? (optional)").fill("Clear, but short.")
    dialog.get_by_role("button", name="Save").click()
    expect(answer.locator(".feedback-comment")).to_have_text("Clear, but short.")
    assert (feedback()["rating"], feedback()["comment"]) == ("up", "Clear, but short.")

    # Changing the rating keeps the comment.
    bad.click()
    expect(bad).to_have_attribute("aria-pressed", "true")
    expect(good).to_have_attribute("aria-pressed", "false")
    assert (feedback()["rating"], feedback()["comment"]) == ("down", "Clear, but short.")

    # Shown from the history after a reload.
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    expect(bad).to_have_attribute("aria-pressed", "true")
    expect(answer.locator(".feedback-comment")).to_have_text("Clear, but short.")

    # Pressed again: taken back.
    bad.click()
    expect(bad).to_have_attribute("aria-pressed", "false")
    expect(answer.locator(".feedback-comment")).to_have_count(0)
    assert feedback() is None
