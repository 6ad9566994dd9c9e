"""Operator defaults through the public API, against the whole system and fake Groq and
Gemini servers: the system prompt (from its file), max_tokens, temperature, the models
behind the aliases (GROQ_MODEL, GEMINI_MODEL), and LIVECHAT_HISTORY_MAX."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fake_gemini import FakeGemini
from fake_openai import GROQ_PATH, FakeOpenAI
from stacks import provider_env, running_stack, stored_messages, wait_ready

from devstack.runner import DevStack

PERSONA = "You are Ada, the support agent of Example Ltd."
GROQ_MODEL = "operator-groq-model"
GEMINI_MODEL = "operator-gemini-model"
HISTORY_MAX = 4


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, groq: FakeOpenAI, gemini: FakeGemini
) -> Iterator[DevStack]:
    data_dir = tmp_path_factory.mktemp("defaults")
    prompt_file = data_dir / "persona.txt"
    prompt_file.write_text(PERSONA + "\n", encoding="utf-8")
    env = provider_env(
        groq,
        gemini,
        GROQ_MODEL=GROQ_MODEL,
        GEMINI_MODEL=GEMINI_MODEL,
        LIVECHAT_SYSTEM_PROMPT_FILE=str(prompt_file),
        LIVECHAT_DEFAULT_MAX_TOKENS="77",
        LIVECHAT_DEFAULT_TEMPERATURE="0.3",
        LIVECHAT_HISTORY_MAX=str(HISTORY_MAX),
    )
    with running_stack(data_dir, env) as running:
        yield running


async def _send(base_url: str, conversation_id: str, **body: Any) -> dict[str, Any]:
    await wait_ready(base_url)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        response = await http.post(f"/v1/conversations/{conversation_id}/messages", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _groq_calls(groq: FakeOpenAI, since: int) -> list[dict[str, Any]]:
    return [r.body for r in groq.requests[since:] if r.path.startswith(GROQ_PATH)]


async def test_a_message_without_settings_gets_the_operators_defaults(
    stack: DevStack, groq: FakeOpenAI
):
    before = len(groq.requests)
    answer = await _send(stack.gateway_url, "defaults-1", content="Where is my parcel?")
    assert answer["message"]["provider"] == "groq"
    [sent] = _groq_calls(groq, before)
    assert sent["model"] == GROQ_MODEL  # `auto` → Groq, with GROQ_MODEL
    assert sent["messages"][0] == {"role": "system", "content": PERSONA}
    assert sent["messages"][-1] == {"role": "user", "content": "Where is my parcel?"}
    assert sent["max_completion_tokens"] == 77
    assert sent["temperature"] == 0.3


async def test_the_message_and_the_conversation_win_over_the_defaults(
    stack: DevStack, groq: FakeOpenAI
):
    before = len(groq.requests)
    await _send(
        stack.gateway_url,
        "defaults-2",
        content="hi",
        system_prompt="Answer in French.",
        max_tokens=5,
        temperature=1.5,
    )
    # The conversation keeps the system prompt its message set: it wins over the default.
    await _send(stack.gateway_url, "defaults-2", content="and now?")
    first, second = _groq_calls(groq, before)
    assert first["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert (first["max_completion_tokens"], first["temperature"]) == (5, 1.5)
    assert second["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert (second["max_completion_tokens"], second["temperature"]) == (77, 0.3)


async def test_gemini_model_and_the_defaults_reach_gemini(stack: DevStack, gemini: FakeGemini):
    before = len(gemini.requests)
    answer = await _send(stack.gateway_url, "defaults-3", content="hello", model="gemini-flash")
    assert answer["message"]["provider"] == "gemini"
    [sent] = gemini.requests[before:]
    assert sent.path.startswith(f"/v1beta/models/{GEMINI_MODEL}:streamGenerateContent")
    # The persona first; memory's layers (personal memory) follow it.
    [instruction] = sent.body["systemInstruction"]["parts"]
    assert instruction["text"].startswith(PERSONA)
    assert sent.body["generationConfig"] == {"maxOutputTokens": 77, "temperature": 0.3}


async def test_the_openai_endpoint_gets_the_default_system_prompt_unless_it_sends_one(
    stack: DevStack, groq: FakeOpenAI
):
    await wait_ready(stack.gateway_url)
    before = len(groq.requests)
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        for messages in (
            [{"role": "user", "content": "hi"}],
            [{"role": "system", "content": "Be short."}, {"role": "user", "content": "hi"}],
        ):
            response = await http.post(
                "/v1/chat/completions", json={"model": "auto", "messages": messages}
            )
            assert response.status_code == 200, response.text
    bare, own = _groq_calls(groq, before)
    assert bare["messages"][0] == {"role": "system", "content": PERSONA}
    assert [m["content"] for m in own["messages"] if m["role"] == "system"] == ["Be short."]


async def test_history_max_keeps_the_newest_messages(stack: DevStack, groq: FakeOpenAI):
    conversation = "defaults-history"
    for n in range(3):
        await _send(stack.gateway_url, conversation, content=f"question {n}", id=f"q{n}")
    # Six stored, the two oldest pruned: the newest four, in order (the last answer is
    # stored a moment after it was sent).
    for _ in range(400):
        messages = await stored_messages(stack.gateway_url, conversation, HISTORY_MAX)
        if messages[0]["id"] == "q1":
            break
        await asyncio.sleep(0.05)
    assert [m["id"] for m in messages if m["role"] == "user"] == ["q1", "q2"]
    assert len(messages) == HISTORY_MAX
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        listed = (await http.get("/v1/conversations")).json()["conversations"]
    [summary] = [c for c in listed if c["id"] == conversation]
    assert summary["message_count"] == HISTORY_MAX
    # What the model is given as context next is what is kept.
    before = len(groq.requests)
    await _send(stack.gateway_url, conversation, content="question 3", id="q3")
    [sent] = _groq_calls(groq, before)
    contents = [m["content"] for m in sent["messages"]]
    assert "question 0" not in contents
    assert contents[-1] == "question 3"
