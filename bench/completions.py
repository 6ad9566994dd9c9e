"""One streamed OpenAI chat completion, timed: the provider directly or livechat's endpoint.

The same code reads both, so the direct figures and livechat's differ by what
lies between the client and the provider only.
"""

from __future__ import annotations

import asyncio
import json
import re
import time

from bench.clients import ANSWER_TIMEOUT, TokenClock
from bench.http import HttpError, LeanClient
from bench.provider import PATH
from bench.stats import StreamTiming

__all__ = ["completion_answer"]

_DATA = b"data: "
_DONE = b"data: [DONE]"
_ERROR = b'data: {"error"'
# A chunk whose delta has text (the role chunk's content is empty).
_CONTENT = re.compile(rb'"content":\s*"(?!")')


def _content(frame: bytes) -> str:
    choices = json.loads(frame[len(_DATA) :]).get("choices") or [{}]
    return str(choices[0].get("delta", {}).get("content") or "")


async def completion_answer(
    client: LeanClient,
    label: str,
    text: str,
    *,
    model: str,
    max_tokens: int | None = None,
    keep_text: bool = False,
) -> StreamTiming:
    """POST `{"stream": true}` to the client's base URL + PATH and read until `[DONE]`."""
    timing = StreamTiming(label, text)
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            clock = TokenClock(timing)
            async with client.stream("POST", PATH, json=body) as response:
                if response.status_code != 200:
                    await response.aread()
                    timing.error = f"HTTP {response.status_code}"
                    return timing
                buffer = b""
                async for chunk in response.aiter_raw():
                    now = time.perf_counter()
                    buffer += chunk
                    *frames, buffer = buffer.split(b"\n\n")
                    for frame in frames:
                        if frame.startswith(_DONE):
                            return timing
                        if frame.startswith(_ERROR):
                            timing.error = "error chunk"
                            return timing
                        if frame.startswith(_DATA) and _CONTENT.search(frame):
                            clock.token(now, _content(frame), keep_text=keep_text)
        timing.error = "stream ended before [DONE]"
    except (TimeoutError, HttpError, OSError) as exc:
        timing.error = type(exc).__name__
    return timing
