"""Typed settings of an inference worker (environment, prefix LIVECHAT_)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from contracts import LivechatSettings

__all__ = ["InferenceSettings"]


class InferenceSettings(LivechatSettings):
    # Fields with a validation alias read the SDKs' own variables (no LIVECHAT_ prefix);
    # in code they may be passed by field name too.
    model_config = SettingsConfigDict(populate_by_name=True)

    default_model: str = "auto"
    context_messages: int = Field(default=20, ge=0)
    # Operator defaults, for requests that set none. The system prompt (or the file that
    # holds it) is used when neither the message nor its conversation has one.
    system_prompt: str | None = None
    system_prompt_file: Path | None = None
    default_max_tokens: int | None = Field(default=None, ge=1)
    default_temperature: float | None = Field(default=None, ge=0, le=2)
    # Pace and length of the built-in offline `demo` model.
    demo_ttft_ms: float = Field(default=250.0, ge=0)
    demo_tokens_per_second: float = Field(default=40.0, gt=0)
    demo_max_tokens: int = Field(default=120, ge=1)
    # A work message not acked (nor marked in progress) within this is redelivered.
    ack_wait_seconds: float = Field(default=30.0, gt=0)
    # How often a generation, or a request waiting for a slot, tells NATS it is still
    # in progress; well under ack_wait.
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    # Deliveries of a request that may generate it (a crash, a publish that failed:
    # it is generated again); after the last, it ends with a `generation_interrupted`
    # error. Deliveries that only waited for memory do not count.
    max_generation_attempts: int = Field(default=5, ge=1)
    # Generations one worker runs at once; one more request waits for a slot.
    max_concurrency: int = Field(default=64, ge=1)
    memory_timeout_seconds: float = Field(default=5.0, gt=0)
    # Delay before a request is tried again: memory did not answer, or the worker
    # stopped mid-generation (the tokens it sent reach the events stream meanwhile).
    retry_delay_seconds: float = Field(default=2.0, ge=0)
    # Token events: what a provider streams within this window after an event goes
    # out joined as the next one (the first token of an answer at once); 0: one
    # event per provider token.
    token_coalesce_ms: float = Field(default=20.0, ge=0)
    # On stop, how long running generations may still finish; the rest are handed
    # over unfinished, and another worker continues them.
    shutdown_grace_seconds: float = Field(default=5.0, ge=0)

    # Providers. Groq and Gemini are on when their key is set; the OpenAI-compatible
    # one (Ollama, vLLM, a llama.cpp server) when its base URL is.
    groq_api_key: SecretStr | None = Field(default=None, validation_alias="GROQ_API_KEY")
    groq_base_url: str | None = Field(default=None, validation_alias="GROQ_BASE_URL")
    # The models of the bare `groq` / `gemini` routes (`auto`, `groq-llama-70b`, `gemini-flash`).
    # Unset: contracts.aliases.GROQ_DEFAULT_MODEL / GEMINI_DEFAULT_MODEL.
    groq_model: str | None = Field(default=None, validation_alias="GROQ_MODEL")
    gemini_model: str | None = Field(default=None, validation_alias="GEMINI_MODEL")
    gemini_api_key: SecretStr | None = Field(default=None, validation_alias="GEMINI_API_KEY")
    google_api_key: SecretStr | None = Field(default=None, validation_alias="GOOGLE_API_KEY")
    gemini_base_url: str | None = Field(default=None, validation_alias="GOOGLE_GEMINI_BASE_URL")
    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    openai_model: str | None = None
    # The provider model ids that see images (shell patterns, a comma or JSON list): a
    # request with images skips the routes of its alias whose model is not one of them
    # (`auto` with GROQ_MODEL a text model: straight to Gemini).
    vision_models: Annotated[tuple[str, ...], NoDecode] = (
        "gemini-*",
        "meta-llama/llama-4-*",
        "*vision*",
        "llava*",
        "demo",
    )
    # The most images given to the model per answer: the newest (the question's first),
    # older ones of the context left out (Groq takes five per request).
    prompt_max_images: int = Field(default=5, ge=0)
    # One provider call's HTTP timeout (connect, and each read).
    provider_timeout_seconds: float = Field(default=60.0, gt=0)

    # The failover chain. Before a provider's first token, a retryable failure is tried again
    # (at most max_attempts calls per provider) after an exponential backoff with
    # jitter, or the provider's Retry-After, while the request stays within its retry
    # budget (time since its first call); then the next provider of the chain.
    provider_max_attempts: int = Field(default=2, ge=1)
    provider_retry_budget_seconds: float = Field(default=5.0, ge=0)
    provider_backoff_base_seconds: float = Field(default=0.5, ge=0)
    # No chunk for this long: the call has stalled, and is given up like a failure.
    provider_stall_seconds: float = Field(default=15.0, gt=0)
    # A provider failing this many calls in a row is skipped for the cooldown; then one
    # probe call decides whether it is used again.
    breaker_failure_threshold: int = Field(default=3, ge=1)
    breaker_cooldown_seconds: float = Field(default=30.0, gt=0)

    @field_validator("vision_models", mode="before")
    @classmethod
    def _pattern_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return tuple(p.strip() for p in text.split(",") if p.strip())
        return value

    @field_validator(
        "groq_api_key",
        "groq_base_url",
        "gemini_api_key",
        "google_api_key",
        "gemini_base_url",
        "openai_base_url",
        "openai_api_key",
        "openai_model",
        "groq_model",
        "gemini_model",
        "system_prompt",
        "system_prompt_file",
        "default_max_tokens",
        "default_temperature",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _system_prompt_from_file(self) -> Self:
        path = self.system_prompt_file
        if path is None:
            return self
        if self.system_prompt is not None:
            raise ValueError("set LIVECHAT_SYSTEM_PROMPT or LIVECHAT_SYSTEM_PROMPT_FILE, not both")
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"system_prompt_file {str(path)!r} cannot be read: {exc}") from None
        if not text:
            raise ValueError(f"system_prompt_file {str(path)!r} is empty")
        # Frozen settings: set once, here, as if given directly.
        object.__setattr__(self, "system_prompt", text)
        return self

    def gemini_key(self) -> SecretStr | None:
        """Like the google-genai SDK: GOOGLE_API_KEY wins when both are set."""
        return self.google_api_key or self.gemini_api_key

    @model_validator(mode="after")
    def _heartbeat_within_ack_wait(self) -> Self:
        if self.heartbeat_seconds >= self.ack_wait_seconds:
            raise ValueError("heartbeat_seconds must be less than ack_wait_seconds")
        return self
