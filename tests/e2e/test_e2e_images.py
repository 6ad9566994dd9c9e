"""Images in messages through the public API of the whole system: REST, WebSocket,
/v1/chat/completions (the `openai` SDK) and /api/chat (AI SDK file parts). The worker
calls Groq and Gemini with their official SDKs, pointed at local servers that speak
their wire formats and record what they were sent: Gemini gets the images as inline
data, Groq's vision model as `image_url` parts with data URLs, also after a failover.
History returns them; the limits refuse with a clear error and store nothing.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fake_gemini import FakeGemini
from fake_gemini import ok as gemini_ok
from fake_openai import FakeOpenAI, ok, status
from openai import AsyncOpenAI
from stacks import provider_env, running_stack, stored_messages
from websockets.asyncio.client import connect

from contracts.aliases import GROQ_VISION_MODEL
from devstack.runner import DevStack

pytestmark = pytest.mark.nats

IMAGE_MAX_BYTES = 48 * 1024
BODY_MAX_BYTES = 8 * 1024  # an image may make a body larger; text may not
FRAME_MAX_BYTES = 8 * 1024


def png(size: int = 0) -> bytes:
    """A valid one-pixel PNG, padded to about `size` bytes with an ancillary chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = chunk(b"IHDR", (1).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0]))
    pixels = chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
    padding = chunk(
        b"tEXt", b"c\x00" + os.urandom(max(size - 80, 0)).hex()[: max(size - 80, 0)].encode()
    )
    return b"\x89PNG\r\n\x1a\n" + header + padding + pixels + chunk(b"IEND", b"")


JPEG = b"\xff\xd8\xff\xe0" + os.urandom(300)
WEBP = b"RIFF" + (400).to_bytes(4, "little") + b"WEBPVP8 " + os.urandom(388)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image(media_type: str, data: bytes) -> dict[str, str]:
    return {"type": "image", "media_type": media_type, "data": b64(data)}


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64,{b64(data)}"


def _bytes(text: str) -> bytes:
    """Base64 in either alphabet (the SDKs differ), padded or not."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def gemini_images(gemini: FakeGemini) -> list[tuple[str, bytes]]:
    """The inline images of the last user turn Gemini was sent."""
    turn = gemini.requests[-1].body["contents"][-1]
    assert turn["role"] == "user"
    parts = [p["inlineData"] for p in turn["parts"] if "inlineData" in p]
    # The SDK sends the blob's `mime_type` in snake case (the API reads both spellings).
    return [(p.get("mimeType") or p["mime_type"], _bytes(p["data"])) for p in parts]


def groq_images(groq: FakeOpenAI, index: int = -1) -> list[tuple[str, bytes]]:
    """The `image_url` parts of the last message Groq was sent (data URLs, decoded)."""
    content = groq.requests[index].body["messages"][-1]["content"]
    assert isinstance(content, list), content
    found = []
    for part in content:
        if part["type"] == "image_url":
            header, _, data = part["image_url"]["url"].partition(",")
            found.append((header.removeprefix("data:").removesuffix(";base64"), _bytes(data)))
    return found


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, groq: FakeOpenAI, gemini: FakeGemini
) -> Iterator[DevStack]:
    env = provider_env(
        groq,
        gemini,
        LIVECHAT_ATTACHMENT_MAX_BYTES=str(IMAGE_MAX_BYTES),
        LIVECHAT_ATTACHMENTS_MAX_COUNT="2",
        LIVECHAT_MAX_BODY_BYTES=str(BODY_MAX_BYTES),
        LIVECHAT_WS_MAX_FRAME_BYTES=str(FRAME_MAX_BYTES),
        LIVECHAT_PROVIDER_MAX_ATTEMPTS="1",
        LIVECHAT_PROMPT_MAX_IMAGES="3",
    )
    with running_stack(tmp_path_factory.mktemp("images"), env) as running:
        yield running


def _conversation_id() -> str:
    return f"img-{uuid.uuid4().hex[:10]}"


async def test_rest_images_reach_gemini_inline_and_come_back_in_history(
    stack: DevStack, gemini: FakeGemini
) -> None:
    conv = _conversation_id()
    big = png(30_000)  # over the text-only body limit: its images make room for it
    gemini.push(gemini_ok(["Two ", "pictures."]))
    body = {
        "content": "What do these show?",
        "model": "gemini-flash",
        "attachments": [image("image/png", big), image("image/jpeg", JPEG)],
    }
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        response = await http.post(f"/v1/conversations/{conv}/messages", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["message"]["content"] == "Two pictures."
        assert gemini_images(gemini) == [("image/png", big), ("image/jpeg", JPEG)]
        text = gemini.requests[-1].body["contents"][-1]["parts"][0]
        assert text == {"text": "What do these show?"}

        question, answer = await stored_messages(stack.gateway_url, conv, 2)
        assert question["attachments"] == body["attachments"]
        assert "attachments" not in answer

        # A follow-up question: the model is shown the earlier pictures again.
        gemini.push(gemini_ok(["Still ", "two."]))
        follow_up = {"content": "How many were there?", "model": "gemini-flash"}
        response = await http.post(f"/v1/conversations/{conv}/messages", json=follow_up)
        assert response.status_code == 200, response.text
        turns = gemini.requests[-1].body["contents"]
        assert [t["role"] for t in turns] == ["user", "model", "user"]
        earlier = [p["inlineData"]["data"] for p in turns[0]["parts"] if "inlineData" in p]
        assert [_bytes(d) for d in earlier] == [big, JPEG]
        assert turns[2]["parts"] == [{"text": "How many were there?"}]

        # Beyond LIVECHAT_PROMPT_MAX_IMAGES (3 here), the oldest are left out.
        gemini.push(gemini_ok(["Three ", "now."]))
        more = {**follow_up, "content": "And these?"}
        more["attachments"] = [image("image/gif", b"GIF89a" + bytes(8)), image("image/webp", WEBP)]
        response = await http.post(f"/v1/conversations/{conv}/messages", json=more)
        assert response.status_code == 200, response.text
        turns = gemini.requests[-1].body["contents"]
        shown = [
            [_bytes(p["inlineData"]["data"]) for p in t["parts"] if "inlineData" in p]
            for t in turns
        ]
        assert shown == [[JPEG], [], [], [], [b"GIF89a" + bytes(8), WEBP]]

        # The text-only limit holds: a body that large without images is refused.
        too_long = {"content": "x" * (BODY_MAX_BYTES + 10), "model": "gemini-flash"}
        response = await http.post(f"/v1/conversations/{conv}/messages", json=too_long)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"


async def test_websocket_image_reaches_groq_vision_and_other_tabs(
    stack: DevStack, groq: FakeOpenAI
) -> None:
    conv = _conversation_id()
    ws_url = stack.gateway_url.replace("http", "ws", 1) + "/v1/ws"
    picture = png(20_000)  # a frame over the text-only limit
    groq.script(ok(["A ", "green ", "pixel."]))
    async with connect(ws_url, open_timeout=30) as sender, connect(ws_url) as other:
        frame = {
            "type": "message",
            "conversation_id": conv,
            "id": "q1",
            "content": "What is this?",
            "model": "groq-vision",
            "attachments": [image("image/png", picture), image("image/webp", WEBP)],
        }
        await sender.send(json.dumps(frame))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(await sender.recv()))
        assert frames[-1]["type"] == "done", frames
        # A second tab that follows the conversation is shown the message and its images.
        await other.send(
            json.dumps({"type": "subscribe", "conversation_id": conv, "last_event_id": 0})
        )
        echo = json.loads(await other.recv())
        while echo["type"] != "message":
            echo = json.loads(await other.recv())
        assert [(a["media_type"], a["size"]) for a in echo["attachments"]] == [
            ("image/png", len(picture)),
            ("image/webp", len(WEBP)),
        ]

        # A bad image gets an error frame; the socket stays open.
        await sender.send(
            json.dumps({**frame, "id": "q2", "attachments": [image("image/jpeg", picture)]})
        )
        refused = json.loads(await sender.recv())
        while refused["type"] != "error":  # presence and the like may come first
            refused = json.loads(await sender.recv())
        assert refused["code"] == "invalid_attachment", refused
        await sender.send(json.dumps({"type": "ping"}))
        while json.loads(await sender.recv()) != {"type": "pong"}:
            pass

    sent = groq.requests[-1].body
    assert sent["model"] == GROQ_VISION_MODEL
    assert sent["messages"][-1]["content"][0] == {"type": "text", "text": "What is this?"}
    assert groq_images(groq) == [("image/png", picture), ("image/webp", WEBP)]
    question, _ = await stored_messages(stack.gateway_url, conv, 2)
    assert [_bytes(a["data"]) for a in question["attachments"]] == [picture, WEBP]


async def test_openai_sdk_image_url_parts(stack: DevStack, groq: FakeOpenAI) -> None:
    groq.script(ok(["A ", "cat."]), ok(["Still ", "a cat."]))
    first, second = png(2000), JPEG
    async with AsyncOpenAI(
        base_url=f"{stack.gateway_url}/v1", api_key="unused", max_retries=0, timeout=60
    ) as client:
        asked: list[Any] = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": data_url("image/png", first)}},
                ],
            }
        ]
        answer = await client.chat.completions.create(model="groq-vision", messages=asked)
        assert answer.choices[0].message.content == "A cat."
        assert groq_images(groq) == [("image/png", first)]

        # Streamed, with the earlier image in the history and a new one.
        follow_up: list[Any] = [
            *asked,
            {"role": "assistant", "content": "A cat."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": data_url("image/jpeg", second), "detail": "low"},
                    },
                ],
            },
        ]
        stream = await client.chat.completions.create(
            model="groq-vision", messages=follow_up, stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Still a cat."
        messages = groq.requests[-1].body["messages"]
        earlier = [p for p in messages[-3]["content"] if p["type"] == "image_url"]
        assert earlier == [
            {"type": "image_url", "image_url": {"url": data_url("image/png", first)}}
        ]
        assert groq_images(groq) == [("image/jpeg", second)]

        # An image alone, without text.
        groq.script(ok(["A ", "dot."]))
        alone: list[Any] = [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url("image/png", first)}}
                ],
            }
        ]
        answer = await client.chat.completions.create(model="groq-vision", messages=alone)
        assert answer.choices[0].message.content == "A dot."
        assert groq.requests[-1].body["messages"][-1]["content"] == alone[0]["content"]

        calls = len(groq.requests)
        remote: list[Any] = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ]
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(model="groq-vision", messages=remote)
        assert refused.value.code == "unsupported_attachment_url"
        with pytest.raises(openai.BadRequestError) as blind:
            await client.chat.completions.create(model="groq-llama-70b", messages=asked)
        assert blind.value.code == "unsupported_attachment"
        assert len(groq.requests) == calls  # nothing was asked of the provider


async def test_ai_sdk_file_part(stack: DevStack, gemini: FakeGemini) -> None:
    conv = _conversation_id()
    picture = png(500)
    gemini.push(gemini_ok(["A ", "pixel."]))
    body = {
        "id": conv,
        "model": "gemini-flash",
        "messages": [
            {
                "id": "ui1",
                "role": "user",
                "parts": [
                    {"type": "text", "text": "Describe it"},
                    {
                        "type": "file",
                        "mediaType": "image/png",
                        "filename": "pixel.png",
                        "url": data_url("image/png", picture),
                    },
                ],
            }
        ],
    }
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        response = await http.post("/api/chat", json=body)
    assert response.status_code == 200, response.text
    deltas = [
        json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
    ]
    assert "".join(d.get("delta", "") for d in deltas if d["type"] == "text-delta") == "A pixel."
    assert gemini_images(gemini) == [("image/png", picture)]
    question, _ = await stored_messages(stack.gateway_url, conv, 2)
    assert question["attachments"] == [image("image/png", picture)]


async def test_failover_from_groq_to_gemini_carries_the_images(
    stack: DevStack, groq: FakeOpenAI, gemini: FakeGemini
) -> None:
    conv = _conversation_id()
    picture = png(1000)
    groq.script(status(503))
    gemini.push(gemini_ok(["Seen ", "by Gemini."]))
    body = {
        "content": "What is it?",
        "model": "groq-vision",
        "attachments": [image("image/png", picture)],
    }
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        response = await http.post(f"/v1/conversations/{conv}/messages", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["message"]["provider"] == "gemini"
    assert response.json()["message"]["content"] == "Seen by Gemini."
    assert groq_images(groq) == [("image/png", picture)]
    assert gemini_images(gemini) == [("image/png", picture)]


async def test_auto_skips_a_text_only_model_for_images(
    stack: DevStack, groq: FakeOpenAI, gemini: FakeGemini
) -> None:
    """`auto` is Groq's text model, then Gemini: a message with images goes to Gemini."""
    calls = len(groq.requests)
    gemini.push(gemini_ok(["Gemini ", "looked."]))
    body = {"content": "Look", "attachments": [image("image/gif", b"GIF89a" + bytes(30))]}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        response = await http.post(f"/v1/conversations/{_conversation_id()}/messages", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["message"]["provider"] == "gemini"
    assert gemini_images(gemini) == [("image/gif", b"GIF89a" + bytes(30))]
    assert len(groq.requests) == calls


@pytest.mark.parametrize(
    ("attachments", "model", "status_code", "code"),
    [
        (
            [image("image/png", png(IMAGE_MAX_BYTES + 100))],
            "gemini-flash",
            413,
            "attachment_too_large",
        ),
        ([image("image/png", png(100))] * 3, "gemini-flash", 422, "too_many_attachments"),
        (
            [{"type": "image", "media_type": "image/png", "data": "not base64!"}],
            "gemini-flash",
            422,
            "invalid_attachment",
        ),
        ([image("image/jpeg", png(100))], "gemini-flash", 422, "invalid_attachment"),
        ([image("image/bmp", b"BM" + bytes(60))], "gemini-flash", 422, "validation_error"),
        ([image("image/png", png(100))], "groq-llama-70b", 400, "unsupported_attachment"),
    ],
    ids=["too-large", "too-many", "bad-base64", "not-its-type", "bad-media-type", "blind-model"],
)
async def test_refused_images_store_nothing(
    stack: DevStack, attachments: list[Any], model: str, status_code: int, code: str
) -> None:
    conv = _conversation_id()
    body = {"content": "Look", "model": model, "attachments": attachments}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        response = await http.post(f"/v1/conversations/{conv}/messages", json=body)
        assert response.status_code == status_code, response.text
        assert response.json()["error"]["code"] == code
        assert (await http.get(f"/v1/conversations/{conv}")).status_code == 404
