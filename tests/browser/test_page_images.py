"""Images on the page: attach one with the file picker, paste another, send them with a
question; they show in the conversation at once and again from history after a reload,
and the model was given them (the demo model tells the kinds and sizes it saw)."""

from __future__ import annotations

import base64
import zlib
from typing import Any

from playwright.sync_api import Page, expect

# These tests do not race the answers: a quick demo model.
DEMO_TOKENS_PER_SECOND = 200


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = chunk(b"IHDR", (2).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0]))
    pixels = chunk(
        b"IDAT", zlib.compress(b"\x00" + b"\x00\xff\x00" * 2 + b"\x00" + b"\xff\x00\x00" * 2)
    )
    return b"\x89PNG\r\n\x1a\n" + header + pixels + chunk(b"IEND", b"")


PNG = _png()
GIF = base64.b64decode("R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==")

# A paste of an image, as a browser delivers one from the clipboard.
_PASTE = """([data]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], "pasted.gif", { type: "image/gif" }));
  const input = document.getElementById("composer-input");
  const paste = { clipboardData: transfer, bubbles: true, cancelable: true };
  input.dispatchEvent(new ClipboardEvent("paste", paste));
}"""


def test_attach_and_paste_images_then_see_them_live_and_in_history(chat: Any) -> None:
    page: Page = chat.page
    page.locator("#attach-input").set_input_files(
        {"name": "dot.png", "mimeType": "image/png", "buffer": PNG}
    )
    page.evaluate(_PASTE, [base64.b64encode(GIF).decode()])
    waiting = page.get_by_role("list", name="Images to send").locator("img")
    expect(waiting).to_have_count(2)
    # Removed and pasted again: what is sent is what the list shows.
    page.get_by_role("button", name="Remove image 2").click()
    expect(waiting).to_have_count(1)
    page.evaluate(_PASTE, [base64.b64encode(GIF).decode()])
    expect(waiting).to_have_count(2)

    chat.send("What is in these pictures?")
    shown = chat.user_messages().last.locator(".images img")
    expect(shown).to_have_count(2)
    expect(waiting).to_have_count(0)  # they left the composer with the message
    chat.wait_final()
    seen = f"(I see 2 images: image/png of {len(PNG)} bytes, image/gif of {len(GIF)} bytes.)"
    assert chat.answer_text().startswith(seen)

    conversation_id = chat.conversation_id()
    stored = chat.stored(conversation_id, 2)["messages"][0]["attachments"]
    assert [(a["media_type"], base64.b64decode(a["data"])) for a in stored] == [
        ("image/png", PNG),
        ("image/gif", GIF),
    ]

    page.reload()
    again = chat.user_messages().last.locator(".images img")
    expect(again).to_have_count(2)
    assert (
        again.first.get_attribute("src")
        == "data:image/png;base64," + base64.b64encode(PNG).decode()
    )
    # Really drawn: the browser decoded the bytes into a picture.
    expect(again.first).to_have_js_property("naturalWidth", 2)

    # Editing the question keeps its images: the new version is sent with them.
    question = chat.user_messages().last
    question.get_by_role("button", name="Edit: What is in these pictures?").click()
    expect(waiting).to_have_count(2)
    page.get_by_role("button", name="Remove image 2").click()
    chat.input.fill("And this one?")
    chat.input.press("Enter")
    expect(question.locator(".sibling-count")).to_have_text("2/2")
    expect(question.locator(".images img")).to_have_count(1)
    chat.wait_final()
    assert chat.answer_text().startswith(f"(I see 1 image: image/png of {len(PNG)} bytes.)")
