"""The shared model alias table and its configuration."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from contracts import LivechatSettings
from contracts.aliases import DEFAULT_ALIASES, ModelRoute, alias_table, parse_route


def test_the_default_aliases() -> None:
    table = alias_table()
    # Bare providers: the model each is configured with (GROQ_MODEL, GEMINI_MODEL).
    assert table["groq-llama-70b"] == (ModelRoute("groq"),)
    assert table["groq-llama-8b"] == (ModelRoute("groq", "llama-3.1-8b-instant"),)
    assert table["gemini-flash"] == (ModelRoute("gemini"),)
    assert table["auto"][:2] == (ModelRoute("groq"), ModelRoute("gemini"))
    assert table["local"] == (ModelRoute("openai"),)  # the configured model
    assert table["demo"] == (ModelRoute("demo", "demo"),)
    assert list(table) == list(DEFAULT_ALIASES)


def test_routes_parse_with_or_without_a_model() -> None:
    assert parse_route("openai:qwen2.5:7b") == ModelRoute("openai", "qwen2.5:7b")
    assert parse_route("openai") == ModelRoute("openai", None)
    assert str(parse_route("groq:llama")) == "groq:llama"
    for bad in ("", "Groq:x", "groq:", "gr oq:x"):
        with pytest.raises(ValueError):
            parse_route(bad)


def test_the_environment_adds_replaces_and_removes_aliases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "LIVECHAT_MODEL_ALIASES",
        '{"fast": ["groq:llama-3.1-8b-instant", "gemini:gemini-2.5-flash"],'
        ' "gemini-flash": ["gemini:gemini-2.0-flash"], "local": []}',
    )
    table = LivechatSettings().model_table()
    assert table["fast"] == (
        ModelRoute("groq", "llama-3.1-8b-instant"),
        ModelRoute("gemini", "gemini-2.5-flash"),
    )
    assert table["gemini-flash"] == (ModelRoute("gemini", "gemini-2.0-flash"),)
    assert "local" not in table and "auto" in table


@pytest.mark.parametrize(
    "value",
    ['{"fast": "groq:x"}', '{"bad alias": ["groq:x"]}', '{"x": ["GROQ:x"]}', "[1]"],
)
def test_a_bad_alias_table_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LIVECHAT_MODEL_ALIASES", value)
    with pytest.raises(ValidationError):
        LivechatSettings()


def test_gateway_and_workers_read_the_same_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import GatewaySettings
    from inference import InferenceSettings

    monkeypatch.setenv("LIVECHAT_MODEL_ALIASES", '{"fast": ["groq:llama-3.1-8b-instant"]}')
    monkeypatch.setenv("LIVECHAT_DEFAULT_MODEL", "fast")
    assert GatewaySettings().model_table() == InferenceSettings().model_table()
    monkeypatch.setenv("LIVECHAT_DEFAULT_MODEL", "nonexistent")
    with pytest.raises(ValidationError, match="known: auto"):
        GatewaySettings()
