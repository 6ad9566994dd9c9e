"""Tool calls through /v1/chat/completions, the whole system: the official `openai` SDK
against the gateway, the real worker calling Groq and Gemini with their official SDKs,
pointed at local servers that speak their wire formats (tests/support/fake_*.py).

The `openai` SDK's tool-calling flow (the call, the tool's result sent back, the final
answer) works unchanged, streaming and not; the providers receive the tools and the
tool messages in their own formats; a failure once a call is out does not fail over;
every answer is accounted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from fake_gemini import FakeGemini
from fake_gemini import calls as gemini_calls
from fake_gemini import ok as gemini_ok
from fake_openai import FakeOpenAI, call_deltas, calls, drop_after, ok
from openai import AsyncOpenAI
from stacks import provider_env, running_stack

from devstack.runner import DevStack

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}
QUESTION: list[Any] = [
    {"role": "system", "content": "Use the tools."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'
RESULT = '{"temperature": 18, "sky": "clear"}'


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, groq: FakeOpenAI, gemini: FakeGemini
) -> Iterator[DevStack]:
    env = provider_env(groq, gemini)
    with running_stack(tmp_path_factory.mktemp("tools"), env) as running:
        yield running


def sdk(stack: DevStack) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{stack.gateway_url}/v1", api_key="unused", max_retries=0, timeout=60
    )


async def totals(stack: DevStack) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        response = await http.get("/v1/usage")
    assert response.status_code == 200
    found: dict[str, int] = response.json()["totals"]
    return found


async def settled_totals(stack: DevStack) -> dict[str, int]:
    """The caller's usage totals once an earlier test's calls are all in the ledger (usage
    records a batch after its fetch wait): unchanged for half a second."""
    last = await totals(stack)
    for _ in range(100):
        await asyncio.sleep(0.5)
        now = await totals(stack)
        if now == last:
            return now
        last = now
    raise AssertionError("the usage totals never settled")


async def accounted(stack: DevStack, before: dict[str, int], requests: int) -> dict[str, int]:
    """The caller's usage totals once the ledger holds `requests` more entries."""
    for _ in range(400):
        now = await totals(stack)
        if now["requests"] >= before["requests"] + requests:
            return now
        await asyncio.sleep(0.05)
    raise AssertionError("the usage was never recorded")


def assemble(chunks: list[Any]) -> list[dict[str, str]]:
    """The function calls of a stream, put together from their deltas as clients do."""
    found: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call = found.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += piece.id or ""
            if piece.function is not None:
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
    return [found[i] for i in sorted(found)]


async def test_groq_streamed_tool_call_then_the_tool_result_then_the_answer(
    stack: DevStack, groq: FakeOpenAI
) -> None:
    before = await settled_totals(stack)
    groq.script(
        calls(*call_deltas("call_w1", "get_weather", ARGUMENTS, pieces=4), usage=(40, 12)),
        ok(["It is ", "18 °C ", "in Paris."], usage=(70, 8)),
    )
    async with sdk(stack) as client:
        stream = await client.chat.completions.create(
            model="groq-llama-70b",
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice="auto",
            stream=True,
            stream_options={"include_usage": True},
        )
        first = [chunk async for chunk in stream]
        [call] = assemble(first)
        assert call == {"id": "call_w1", "name": "get_weather", "arguments": ARGUMENTS}
        pieces = [c for c in first if c.choices and c.choices[0].delta.tool_calls]
        assert len(pieces) == 5  # the name, then the arguments in four parts, as Groq sent
        assert [c.choices[0].finish_reason for c in first if c.choices][-1] == "tool_calls"
        assert first[-1].usage is not None and first[-1].usage.total_tokens == 52

        follow_up = [
            *QUESTION,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call["id"], "content": RESULT},
        ]
        stream = await client.chat.completions.create(
            model="groq-llama-70b", messages=follow_up, tools=[WEATHER], stream=True
        )
        second = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in second) == "It is 18 °C in Paris."
    assert second[-1].choices[0].finish_reason == "stop"

    asked, answered = groq.requests[-2].body, groq.requests[-1].body
    assert asked["tools"] == [WEATHER]
    assert asked["tool_choice"] == "auto"
    assert asked["messages"] == [*QUESTION]
    assert answered["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_w1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ARGUMENTS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_w1", "content": RESULT},
    ]
    # Both answers are in the caller's ledger, with Groq's counts.
    after = await accounted(stack, before, 2)
    assert after["total_tokens"] - before["total_tokens"] == 40 + 12 + 70 + 8


async def test_groq_whole_tool_call_and_the_sdk_message_sent_back_as_it_is(
    stack: DevStack, groq: FakeOpenAI
) -> None:
    groq.script(
        calls(
            *call_deltas("call_a", "get_weather", '{"city": "Oslo"}'),
            *call_deltas("call_b", "get_weather", '{"city": "Rome"}', index=1),
            chunks=["Checking both."],
        ),
        ok(["Oslo is colder."]),
    )
    async with sdk(stack) as client:
        answer = await client.chat.completions.create(
            model="groq-llama-70b",
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Checking both."
        calls_made = choice.message.tool_calls or []
        assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls_made] == [  # type: ignore[union-attr]
            ("call_a", "get_weather", {"city": "Oslo"}),
            ("call_b", "get_weather", {"city": "Rome"}),
        ]
        # The SDK's own flow: its message object appended, then one result per call.
        messages = [*QUESTION, choice.message]
        messages += [{"role": "tool", "tool_call_id": c.id, "content": RESULT} for c in calls_made]
        final = await client.chat.completions.create(
            model="groq-llama-70b", messages=messages, tools=[WEATHER]
        )
    assert final.choices[0].message.content == "Oslo is colder."
    assert final.choices[0].finish_reason == "stop"
    assert groq.requests[-2].body["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    sent = groq.requests[-1].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[2]["tool_calls"]] == ["call_a", "call_b"]
    assert [m["tool_call_id"] for m in sent[3:]] == ["call_a", "call_b"]


async def test_gemini_function_declarations_calls_and_responses(
    stack: DevStack, gemini: FakeGemini
) -> None:
    gemini.push(
        gemini_calls({"name": "get_weather", "args": {"city": "Paris"}}, signature="c2lnLTE="),
        gemini_ok(["Clear and 18 °C."]),
    )
    async with sdk(stack) as client:
        stream = await client.chat.completions.create(
            model="gemini-flash",
            messages=QUESTION,
            tools=[WEATHER],
            tool_choice="required",
            stream=True,
        )
        chunks = [chunk async for chunk in stream]
        [call] = assemble(chunks)
        assert (call["name"], json.loads(call["arguments"])) == ("get_weather", {"city": "Paris"})
        assert call["id"]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        follow_up = [
            *QUESTION,
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["name"], "arguments": call["arguments"]},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call["id"], "content": RESULT},
        ]
        final = await client.chat.completions.create(
            model="gemini-flash", messages=follow_up, tools=[WEATHER]
        )
    assert final.choices[0].message.content == "Clear and 18 °C."

    asked, answered = gemini.requests[-2].body, gemini.requests[-1].body
    [declaration] = asked["tools"][0]["functionDeclarations"]
    assert declaration["name"] == "get_weather"
    assert declaration["description"] == "The weather now in a city."
    # The JSON Schema as it is (the SDK spells the field in snake case, which the API's
    # JSON mapping accepts as well as camel case).
    schema = declaration.get("parametersJsonSchema", declaration.get("parameters_json_schema"))
    assert schema == WEATHER["function"]["parameters"]
    assert asked["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    model_turn, tool_turn = answered["contents"][-2:]
    assert model_turn["role"] == "model"
    [part] = model_turn["parts"]
    assert part["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}}
    assert part["thoughtSignature"] == "c2lnLTE="  # Gemini's signature, given back
    assert tool_turn["role"] == "user"
    assert tool_turn["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": json.loads(RESULT)}}
    ]
    # No tool_choice: no toolConfig, Gemini's default (AUTO).
    assert "toolConfig" not in answered


async def test_a_failure_after_a_tool_call_delta_does_not_fail_over(
    stack: DevStack, groq: FakeOpenAI, gemini: FakeGemini
) -> None:
    before = await settled_totals(stack)
    asked_gemini = len(gemini.requests)
    half = call_deltas("call_x", "get_weather", ARGUMENTS, pieces=4)[:3]
    groq.script(drop_after(0, (), tool_calls=half))
    async with sdk(stack) as client:
        stream = await client.chat.completions.create(
            model="auto", messages=QUESTION, tools=[WEATHER], stream=True
        )
        seen: list[Any] = []
        with pytest.raises(openai.APIError) as caught:
            async for chunk in stream:
                seen.append(chunk)
    # The pieces that went out, then the error: no other provider takes the call over.
    assert assemble(seen)[0]["name"] == "get_weather"
    assert "unavailable" in caught.value.message
    assert len(gemini.requests) == asked_gemini
    # The failed call is accounted too.
    after = await accounted(stack, before, 1)
    assert after["requests"] == before["requests"] + 1
    assert after["total_tokens"] > before["total_tokens"]


async def test_tool_messages_are_checked(stack: DevStack) -> None:
    async with sdk(stack) as client:
        with pytest.raises(openai.BadRequestError) as orphan:
            await client.chat.completions.create(
                model="groq-llama-70b",
                messages=[*QUESTION, {"role": "tool", "tool_call_id": "nope", "content": "x"}],
            )
        with pytest.raises(openai.BadRequestError) as unknown:
            await client.chat.completions.create(
                model="groq-llama-70b",
                messages=QUESTION,
                tools=[WEATHER],
                tool_choice={"type": "function", "function": {"name": "get_time"}},
            )
    assert orphan.value.code == "invalid_messages"
    assert unknown.value.code == "invalid_tool_choice"
    assert unknown.value.param == "tool_choice"
