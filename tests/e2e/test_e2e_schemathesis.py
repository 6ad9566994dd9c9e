"""Property-based fuzzing of the HTTP API from its own OpenAPI document (Schemathesis),
against the whole system as `make dev` runs it: a bounded number of examples on every
route, none may answer 5xx or a response its schema does not declare; then the system
still answers a normal chat."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from stacks import FAST_ENV, running_stack

from devstack.runner import DevStack
from gateway import GatewaySettings
from gateway.app import create_app

# Examples per route: every route is tried, within the time CI allows.
EXAMPLES = 12
# A quick demo model: JSON-mode sends wait for the whole answer.
ENV = {
    **FAST_ENV,
    "LIVECHAT_DEMO_TTFT_MS": "0",
    "LIVECHAT_DEMO_TOKENS_PER_SECOND": "5000",
    "LIVECHAT_GENERATION_TIMEOUT_SECONDS": "20",
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def fuzzed_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("fuzz"), ENV) as running:
        yield running


# The document the gateway serves (/openapi.json), read from the app itself so that
# each route is a test of its own.
SCHEMA = schemathesis.openapi.from_dict(create_app(GatewaySettings()).openapi())
OPERATIONS = {
    f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in SCHEMA.get_all_operations())
}


@pytest.mark.parametrize("route", sorted(OPERATIONS))
def test_every_route_answers_within_its_schema(fuzzed_stack: DevStack, route: str) -> None:
    base_url = fuzzed_stack.gateway_url

    @given(case=OPERATIONS[route].as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same examples on every run: a failure reproduces
        database=None,
    )
    def answers_within_its_schema(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=base_url, checks=CHECKS, timeout=30)

    answers_within_its_schema()


def test_afterwards_the_system_still_answers_a_chat(fuzzed_stack: DevStack) -> None:
    with httpx.Client(base_url=fuzzed_stack.gateway_url, timeout=60) as client:
        response = client.post(
            "/v1/conversations/after-fuzzing/messages", json={"content": "Hello there"}
        )
        assert response.status_code == 200, response.text
        answer = response.json()["message"]
        assert answer["role"] == "assistant" and answer["status"] == "complete"
        assert answer["content"]
        # Memory writes the history from the chat stream, a moment after the reply.
        for _ in range(400):
            stored = client.get("/v1/conversations/after-fuzzing").json()
            if len(stored["messages"]) >= 2:
                break
            time.sleep(0.05)
        assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]


def test_the_fuzzing_covers_every_route(fuzzed_stack: DevStack) -> None:
    served = httpx.get(f"{fuzzed_stack.gateway_url}/openapi.json", timeout=30).json()
    assert served == SCHEMA.raw_schema
    assert len(OPERATIONS) >= 15
    for route in (
        "POST /v1/conversations/{conversation_id}/messages",
        "POST /api/chat",
        "POST /v1/chat/completions",
    ):
        assert route in OPERATIONS
