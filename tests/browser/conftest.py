"""The web page in a real browser (Debian's chromium driven by Playwright) against
the whole system as `make dev` runs it."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    Locator,
    Page,
    Playwright,
    ViewportSize,
    expect,
    sync_playwright,
)
from stacks import running_stack

from devstack.runner import DevStack

# Answers take seconds on a loaded machine: wait generously, never time them.
expect.set_options(timeout=30_000)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

DESKTOP: ViewportSize = {"width": 1280, "height": 800}

# Slow enough that a test can stop an answer, restart the gateway or reload the
# page while the answer is still streaming (the demo answers ~120 words).
SLOW_ENV = {
    "LIVECHAT_DEMO_TTFT_MS": "100",
    "LIVECHAT_DEMO_TOKENS_PER_SECOND": "12",
    "LIVECHAT_ACK_WAIT_SECONDS": "5",
    "LIVECHAT_HEARTBEAT_SECONDS": "1",
    "LIVECHAT_LOG_LEVEL": "WARNING",
}


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        # `make test` installs it (apt-get install chromium); never skip the browser tests.
        pytest.fail("Debian's chromium is not installed: run `apt-get install -y chromium`")
    return path


# Module scope, not session: while the sync API runs, the main thread has a running
# event loop, which the async tests of other modules (pytest-asyncio) cannot share.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=_chromium())
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevStack]:
    """The system as `make dev` runs it, with a slow demo model, for one test module
    (a module may set DEMO_TOKENS_PER_SECOND and a STACK_ENV of its own)."""
    env = dict(SLOW_ENV)
    pace = getattr(request.module, "DEMO_TOKENS_PER_SECOND", None)
    if pace is not None:
        env["LIVECHAT_DEMO_TOKENS_PER_SECOND"] = str(pace)
    env.update(getattr(request.module, "STACK_ENV", {}))
    with running_stack(tmp_path_factory.mktemp("stack"), env) as running:
        yield running


@pytest.fixture
def page(browser: Browser, stack: DevStack) -> Iterator[Page]:
    """A fresh browser profile (own localStorage) on the chat page, ready to use."""
    context = browser.new_context(viewport=DESKTOP, base_url=stack.gateway_url)
    context.set_default_timeout(30_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.goto("/")
    opened.wait_for_selector("body[data-ready=true]")
    try:
        yield opened
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


FINAL = ("complete", "cancelled", "failed", "interrupted")


class ChatPage:
    """What a person does on the page and sees there, plus the server's stored truth."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.next_answer: int | None = None

    @property
    def input(self) -> Locator:
        return self.page.get_by_label("Message", exact=True)

    def send(self, text: str) -> None:
        # The answer to this message is the next bubble, not the last one seen now.
        self.next_answer = self.answers().count()
        self.input.fill(text)
        self.input.press("Enter")

    def user_messages(self) -> Locator:
        return self.page.locator("#messages li.user")

    def answers(self) -> Locator:
        return self.page.locator("#messages li.assistant")

    def last_answer(self) -> Locator:
        """The answer to the message sent last (the newest one when none was sent)."""
        if self.next_answer is None:
            return self.answers().last
        return self.answers().nth(self.next_answer)

    def answer_text(self, answer: Locator | None = None) -> str:
        return str((answer or self.last_answer()).locator(".content").inner_text())

    def wait_words(self, count: int, answer: Locator | None = None) -> str:
        """The answer's text once it shows at least `count` words while still streaming."""
        target = answer or self.last_answer()
        expect(target).to_have_attribute("data-status", "streaming")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.answer_text(target)
            if len(text.split()) >= count:
                return text
            self.page.wait_for_timeout(50)
        raise AssertionError(f"the answer never reached {count} words")

    def wait_final(self, answer: Locator | None = None, timeout: float = 60_000) -> str:
        target = answer or self.last_answer()
        expect(target).to_have_attribute(
            "data-status", re.compile("^(" + "|".join(FINAL) + ")$"), timeout=timeout
        )
        return str(target.get_attribute("data-status"))

    def conversation_id(self) -> str:
        match = re.fullmatch(r"#c/([A-Za-z0-9_-]+)", self.page.evaluate("location.hash"))
        assert match, "the page names its conversation in the address"
        return match.group(1)

    def stored(self, conversation_id: str, count: int) -> dict[str, Any]:
        """The conversation as the server keeps it, once it holds `count` final messages."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = httpx.get(f"{self.base_url}/v1/conversations/{conversation_id}")
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                stored = body["messages"]
                if len(stored) >= count and all(m["status"] in FINAL for m in stored):
                    return body
            time.sleep(0.1)
        raise AssertionError(f"{conversation_id} never held {count} final messages")


@pytest.fixture
def chat(page: Page, stack: DevStack) -> ChatPage:
    return ChatPage(page, stack.gateway_url)


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Page, str], Path]:
    """Saves a screenshot; into docs/screenshots too with LIVECHAT_UPDATE_SCREENSHOTS=1."""

    def take(page: Page, name: str) -> Path:
        path = tmp_path / f"{name}.png"
        page.screenshot(path=str(path))
        if os.environ.get("LIVECHAT_UPDATE_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / path.name)
        return path

    return take
