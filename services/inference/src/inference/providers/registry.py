"""The providers a worker can call, by name (the names the alias table uses).

`demo` always; `groq` and `gemini` when their API key is set; `openai` (an
OpenAI-compatible server: Ollama, vLLM, a llama.cpp server) when its base URL is.
"""

from __future__ import annotations

from inference.clock import Clock
from inference.providers.base import Provider
from inference.providers.demo import DemoProvider
from inference.providers.gemini import create_gemini_provider
from inference.providers.groq import create_groq_provider
from inference.providers.model_routes import DEMO, GEMINI, GROQ, OPENAI
from inference.providers.openai_compatible import create_openai_compatible_provider
from inference.settings import InferenceSettings

__all__ = ["default_providers"]


def default_providers(settings: InferenceSettings, clock: Clock) -> dict[str, Provider]:
    providers: dict[str, Provider] = {
        DEMO: DemoProvider(
            ttft_seconds=settings.demo_ttft_ms / 1000,
            tokens_per_second=settings.demo_tokens_per_second,
            answer_tokens=settings.demo_max_tokens,
            clock=clock,
        )
    }
    timeout = settings.provider_timeout_seconds
    if settings.groq_api_key is not None:
        providers[GROQ] = create_groq_provider(
            settings.groq_api_key.get_secret_value(), settings.groq_base_url, timeout
        )
    gemini_key = settings.gemini_key()
    if gemini_key is not None:
        providers[GEMINI] = create_gemini_provider(
            gemini_key.get_secret_value(), settings.gemini_base_url, timeout
        )
    if settings.openai_base_url is not None:
        key = settings.openai_api_key
        providers[OPENAI] = create_openai_compatible_provider(
            settings.openai_base_url, key.get_secret_value() if key else None, timeout
        )
    return providers
