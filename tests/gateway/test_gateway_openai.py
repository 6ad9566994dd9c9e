"""POST /v1/chat/completions through the official `openai` SDK.

Against a real gateway, NATS and the fake worker (what the gateway publishes
and relays), then against the whole system (real worker, demo model, usage
ledger, memory).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from minutes import early_in_a_minute
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from openai import AsyncOpenAI

from contracts import topology
from contracts.events import CancelRequested, ContextMessage
from devstack.ports import free_port
from devstack.runner import DevStack
from devstack.settings import DevSettings


def _fake_tokens(content: str) -> int:
    """Tokens of the fake worker's answer `echo: <content>` (3 characters each)."""
    return -(-len(f"echo: {content}") // 3)


MESSAGES: list[Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is a river?"},
    {"role": "assistant", "content": "Water that flows."},
    {"role": "user", "content": "And a lake?"},
]


@pytest.fixture
async def client(gateway_url: str) -> AsyncIterator[AsyncOpenAI]:
    sdk = AsyncOpenAI(base_url=f"{gateway_url}/v1", api_key="unused", max_retries=0, timeout=30)
    try:
        yield sdk
    finally:
        await sdk.close()


async def test_completion_answers_the_last_message_with_the_rest_as_history(client, worker, counts):
    answer = await client.chat.completions.create(
        model="demo", messages=MESSAGES, max_tokens=50, temperature=0.5
    )
    assert answer.object == "chat.completion"
    assert answer.model == "demo"
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: And a lake?"
    assert choice.finish_reason == "stop"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == _fake_tokens("And a lake?")
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens

    [request] = worker.requests
    assert request.content == "And a lake?"
    assert request.history == (
        ContextMessage(role="system", content="Be brief."),
        ContextMessage(role="user", content="What is a river?"),
        ContextMessage(role="assistant", content="Water that flows."),
    )
    assert request.persist is False  # stateless: nothing goes to history
    assert request.user_id == "local"
    assert request.options.model == "demo"
    assert request.options.max_tokens == 50
    assert request.options.temperature == 0.5
    assert answer.id == f"chatcmpl-{request.message_id}"
    # Only the work item was published: no user message stored, no echo.
    assert (await counts())[topology.CHAT_STREAM] == 0


async def test_stream_sends_role_then_deltas_then_finish_then_done(client, worker, gateway_url):
    stream = await client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "hello there"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "echo: hello there"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert all(c.usage is None for c in chunks)

    # The raw framing ends with the OpenAI terminator.
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "x"}], "stream": True},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = b"".join([chunk async for chunk in response.aiter_bytes()]).decode()
    assert raw.endswith("data: [DONE]\n\n")


async def test_include_usage_sends_a_final_usage_chunk(client, worker):
    stream = await client.chat.completions.create(
        model="demo",
        messages=[{"role": "user", "content": [{"type": "text", "text": "parts work"}]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == _fake_tokens("parts work")
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in body) == "echo: parts work"


async def test_unknown_model_is_a_not_found_error_naming_the_known_ones(client, counts):
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    error = caught.value
    assert error.status_code == 404
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert error.type == "invalid_request_error"
    assert "demo" in error.message and "auto" in error.message
    assert (await counts())[topology.WORK_STREAM] == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"model": "demo", "messages": []}, "validation_error"),
        ({"model": "demo", "messages": [{"role": "user", "content": "x"}], "n": 2}, None),
        (
            {"model": "demo", "messages": [{"role": "user", "content": "x"}], "tools": []},
            "validation_error",
        ),
        (
            {"model": "demo", "messages": [{"role": "assistant", "content": "x"}]},
            "invalid_messages",
        ),
        ({"model": "demo", "messages": [{"role": "user", "content": " "}]}, "invalid_messages"),
        (
            {"model": "demo", "messages": [{"role": "user", "content": "x"}], "temperature": 9},
            "validation_error",
        ),
    ],
)
async def test_bad_requests_are_openai_shaped_400s_and_publish_nothing(
    gateway_url, counts, body, code
):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["code"] == (code or "validation_error")
    assert (await counts())[topology.WORK_STREAM] == 0


async def test_bad_request_raises_the_sdk_bad_request_error(client):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="demo", messages=[{"role": "assistant", "content": "prefill"}]
        )
    assert caught.value.code == "invalid_messages"
    assert caught.value.param == "messages"


async def test_not_json_is_a_400(gateway_url):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        response = await http.post(
            "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


async def test_a_failed_generation_is_an_sdk_error(client, worker):
    fail = [{"role": "user", "content": "fail please"}]
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model="demo", messages=fail)
    assert caught.value.status_code == 503
    assert caught.value.code == "provider_unavailable"

    stream = await client.chat.completions.create(model="demo", messages=fail, stream=True)
    with pytest.raises(openai.APIError, match="down"):
        async for _ in stream:
            pass


async def test_rate_limited_caller_gets_the_sdk_rate_limit_error(gateway_server, worker, counts):
    async with gateway_server(rate_limit_per_minute=1) as url:
        await early_in_a_minute()  # both requests in one calendar minute
        limited = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        hi = [{"role": "user", "content": "hi"}]
        async with limited:
            await limited.chat.completions.create(model="demo", messages=hi)
            with pytest.raises(openai.RateLimitError) as caught:
                await limited.chat.completions.create(model="demo", messages=hi)
    assert caught.value.code == "rate_limited"
    assert caught.value.type == "rate_limit_error"
    assert int(caught.value.response.headers["retry-after"]) > 0
    assert len(worker.requests) == 1


async def _kept_stop(js: JetStreamContext, conversation_id: str) -> CancelRequested | None:
    """The stop the cancel bucket keeps for the local user's conversation."""
    try:
        bucket = await js.key_value(topology.CANCEL_BUCKET)
        entry = await bucket.get(topology.cancel_key(conversation_id, "local"))
    except (BucketNotFoundError, KeyNotFoundError):
        return None
    assert entry.value is not None
    return CancelRequested.model_validate_json(entry.value)


async def test_a_stream_the_client_leaves_is_stopped(client, worker, js):
    worker.hold = asyncio.Event()
    hello = [{"role": "user", "content": "a long story"}]
    stream = await client.chat.completions.create(model="demo", messages=hello, stream=True)
    first = await anext(aiter(stream))
    assert first.choices[0].delta.role == "assistant"
    await stream.close()  # the client leaves: nobody can ever read the rest
    for _ in range(400):  # the role chunk may come before the worker has the request
        if worker.requests:
            break
        await asyncio.sleep(0.05)
    [request] = worker.requests
    for _ in range(400):
        stop = await _kept_stop(js, request.conversation_id)
        if stop is not None:
            break
        await asyncio.sleep(0.05)
    # Kept for the worker: it stops the request (sent before the stop) and bills no more.
    assert stop is not None
    assert stop.user_id == "local"
    assert request.conversation_id.startswith("oai-")
    worker.hold.set()


async def test_a_stream_read_to_its_end_is_not_stopped(client, worker, js):
    hello = [{"role": "user", "content": "short"}]
    stream = await client.chat.completions.create(model="demo", messages=hello, stream=True)
    assert [c async for c in stream][-1].choices[0].finish_reason == "stop"
    [request] = worker.requests
    await asyncio.sleep(0.3)  # a wrong stop would be sent at once
    assert await _kept_stop(js, request.conversation_id) is None


async def test_a_completion_not_finished_in_time_is_a_503_timeout(gateway_server, worker):
    worker.hold = asyncio.Event()
    async with gateway_server(generation_timeout_seconds=1.0) as url:
        slow = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
        async with slow:
            with pytest.raises(openai.InternalServerError) as caught:
                await slow.chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": "slow"}]
                )
    worker.hold.set()
    assert caught.value.status_code == 503
    assert caught.value.code == "timeout"


# --- the model list and OpenAI-shaped errors on every OpenAI route ------------------

OPENAI_KEY = "sk-livechat-test-key"


async def test_models_list_names_every_alias_in_openais_shape(client, gateway_url, settings):
    page = await client.models.list()
    ids = [model.id for model in page.data]
    assert ids == list(settings.model_table())
    assert {"auto", "demo"} <= set(ids)
    assert all(m.object == "model" and m.owned_by == "livechat" for m in page.data)
    assert all(m.created > 1_700_000_000 for m in page.data)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        raw = (await http.get("/v1/models")).json()
    assert raw["object"] == "list"
    assert set(raw["data"][0]) == {"id", "object", "created", "owned_by"}


async def test_models_list_has_the_aliases_added_by_the_setting(gateway_server):
    async with gateway_server(model_aliases={"fast": ["demo:demo"], "local": []}) as url:
        sdk = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        async with sdk:
            ids = [model.id async for model in sdk.models.list()]
    assert "fast" in ids and "local" not in ids


async def test_models_retrieve_answers_one_alias_and_404s_an_unknown_one(client):
    demo = await client.models.retrieve("demo")
    assert (demo.id, demo.object, demo.owned_by) == ("demo", "model", "livechat")
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-4o")
    error = caught.value
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert error.type == "invalid_request_error"
    assert "gpt-4o" in error.message and "demo" in error.message


@pytest.mark.parametrize("call", ["list", "retrieve", "create"])
async def test_a_wrong_key_raises_the_sdk_authentication_error(gateway_server, worker, call):
    async with gateway_server(api_keys={OPENAI_KEY: "alice"}) as url:
        wrong = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0)
        right = AsyncOpenAI(base_url=f"{url}/v1", api_key=OPENAI_KEY, max_retries=0)
        async with wrong, right:
            requests = {
                "list": lambda sdk: sdk.models.list(),
                "retrieve": lambda sdk: sdk.models.retrieve("demo"),
                "create": lambda sdk: sdk.chat.completions.create(
                    model="demo", messages=[{"role": "user", "content": "hi"}]
                ),
            }
            with pytest.raises(openai.AuthenticationError) as caught:
                await requests[call](wrong)
            assert await requests[call](right)  # the right key passes
    error = caught.value
    assert error.status_code == 401
    assert error.type == "authentication_error"
    assert error.code == "unauthorized"
    assert error.response.headers["www-authenticate"].startswith("Bearer")
    assert set(error.body) == {"message", "type", "param", "code"}  # type: ignore[arg-type]


async def test_no_key_is_an_openai_401_and_other_routes_keep_the_livechat_shape(gateway_server):
    async with (
        gateway_server(api_keys={OPENAI_KEY: "alice"}) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        models = await http.get("/v1/models")
        completions = await http.post("/v1/chat/completions", json={})
        conversations = await http.get("/v1/conversations")
    for response in (models, completions):
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert conversations.status_code == 401
    assert set(conversations.json()["error"]) == {"code", "message"}


async def test_a_wrong_method_is_an_openai_405(gateway_url):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        response = await http.delete("/v1/models")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert response.json()["error"]["type"] == "invalid_request_error"


# --- the whole system: real worker with the demo model, memory, usage ------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    port = free_port()
    data_dir: Path = tmp_path_factory.mktemp("openai-stack")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIVECHAT_") and not k.endswith("_API_KEY")
    }
    env |= {
        "LIVECHAT_DEMO_TTFT_MS": "30",
        "LIVECHAT_DEMO_TOKENS_PER_SECOND": "200",
        "LIVECHAT_LOG_LEVEL": "WARNING",
        "LIVECHAT_HTTP_PORT": str(port),
        "LIVECHAT_DATA_DIR": str(data_dir),
    }
    running = DevStack(DevSettings(data_dir=data_dir, http_port=port, max_restarts=0), env=env)
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def _usage(base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        response = await http.get("/v1/usage")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_through_the_system_answers_are_accounted_and_not_stored(stack: DevStack):
    base = stack.gateway_url
    before = (await _usage(base))["totals"]
    question = [{"role": "user", "content": f"Tell me about glaciers {uuid.uuid4().hex[:6]}"}]
    async with AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="demo", messages=question, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        whole = await sdk.chat.completions.create(model="demo", messages=question)
        short = await sdk.chat.completions.create(model="demo", messages=question, max_tokens=5)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # The demo model is deterministic: both modes carry the same answer.
    assert streamed == whole.choices[0].message.content
    assert "glaciers" in streamed
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 5
    assert whole.usage is not None and whole.usage.total_tokens == usage.total_tokens
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 5

    # Each completion is one ledger entry of the caller, once the usage service has it.
    expected = before["total_tokens"] + 2 * usage.total_tokens + short.usage.total_tokens
    for _ in range(200):
        totals = (await _usage(base))["totals"]
        if totals["requests"] >= before["requests"] + 3:
            break
        await asyncio.sleep(0.05)
    assert totals["requests"] == before["requests"] + 3
    assert totals["total_tokens"] == expected

    # Stateless: no conversation was created in history.
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        listed = (await http.get("/v1/conversations")).json()["conversations"]
    assert listed == []
