"""The OpenAPI document names a schema for every JSON answer, and those schemas fit the bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from contracts import rpc
from contracts.events import Usage
from gateway.app import create_app
from gateway.errors import error_body
from gateway.protocols.openai.schema import (
    ChatCompletion,
    OpenAIErrorOut,
    completion,
    openai_error_body,
)
from gateway.protocols.rest.relay import stored_as_json
from gateway.schemas import CancelOut, ErrorOut, HealthOut, NotReadyOut, ReadyOut, ReplyOut
from gateway.settings import GatewaySettings

# (method, path, status) -> the schema its JSON body is documented with.
ANSWERS = {
    ("get", "/healthz", "200"): "HealthOut",
    ("get", "/readyz", "200"): "ReadyOut",
    ("get", "/readyz", "503"): "NotReadyOut",
    ("post", "/v1/conversations/{conversation_id}/messages", "200"): "ReplyOut",
    ("post", "/v1/conversations/{conversation_id}/cancel", "202"): "CancelOut",
    ("post", "/v1/chat/completions", "200"): "ChatCompletion",
    ("post", "/v1/chat/completions", "404"): "OpenAIErrorOut",
    ("post", "/v1/chat/completions", "401"): "OpenAIErrorOut",
    ("get", "/v1/models", "200"): "ModelList",
    ("get", "/v1/models", "401"): "OpenAIErrorOut",
    ("get", "/v1/models/{model_id}", "200"): "ModelOut",
    ("get", "/v1/models/{model_id}", "404"): "OpenAIErrorOut",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # No NATS needed: the app is served without its lifespan (no `with`).
    response = TestClient(create_app(GatewaySettings())).get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def _schema_name(document: dict[str, Any], method: str, path: str, status: str) -> str:
    answer = document["paths"][path][method]["responses"][status]
    ref: str = answer["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[-1]


@pytest.mark.parametrize(("method", "path", "status"), list(ANSWERS))
def test_the_answers_have_schemas(
    document: dict[str, Any], method: str, path: str, status: str
) -> None:
    assert _schema_name(document, method, path, status) == ANSWERS[method, path, status]


def test_every_api_error_is_documented_in_the_one_error_shape(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's own 422 is never sent
    assert set(schemas["ErrorOut"]["properties"]) == {"error"}
    errors = 0
    for path, operations in document["paths"].items():
        if not path.startswith(("/v1/", "/api/")):
            continue
        for method, operation in operations.items():
            failures = [s for s in operation["responses"] if int(s) >= 400]
            assert "401" in failures, (method, path)
            for status in failures:
                name = _schema_name(document, method, path, status)
                openai = path.startswith(("/v1/chat/completions", "/v1/models"))
                assert name == ("OpenAIErrorOut" if openai else "ErrorOut"), (method, path, status)
                errors += 1
    assert errors > 40


def _fits(model: type[BaseModel], body: dict[str, Any], **dump: Any) -> None:
    assert model.model_validate(body).model_dump(mode="json", **dump) == body


def test_the_schemas_fit_what_is_sent() -> None:
    usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    _fits(HealthOut, {"status": "ok"})
    _fits(ReadyOut, {"status": "ready", "checks": {"nats": True, "memory": True}})
    not_ready = {**error_body("not_ready", "not answering: memory"), "checks": {"memory": False}}
    _fits(NotReadyOut, not_ready, exclude_none=True)
    _fits(ErrorOut, error_body("service_unavailable", "retry", {"message_id": "m1"}))
    _fits(CancelOut, {"cancelled": True})
    stored = rpc.StoredMessage(
        id="r1",
        role="assistant",
        content="hi",
        status="complete",
        created_at=datetime(2026, 1, 2, tzinfo=UTC),
        model="auto",
        provider="demo",
        usage=usage,
        finish_reason="stop",
    )
    _fits(ReplyOut, stored_as_json(stored), exclude_none=True)
    answer = completion("chatcmpl-r1", 1, "auto", "hi", "stop", usage.model_dump())
    # `tool_calls` is there only when the model called functions.
    assert "tool_calls" not in answer["choices"][0]["message"]
    _fits(ChatCompletion, answer, exclude_unset=True)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    calls = completion("chatcmpl-r2", 1, "auto", "", "tool_calls", usage.model_dump(), [call])
    assert calls["choices"][0]["message"]["content"] is None
    _fits(ChatCompletion, calls, exclude_unset=True)
    _fits(OpenAIErrorOut, openai_error_body(404, "model_not_found", "no such model", "model"))
