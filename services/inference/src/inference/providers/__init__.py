"""The model providers a worker calls: one protocol (base), the registry of configured ones,
and each provider (demo, Groq, Gemini, OpenAI-compatible) with its shared helpers."""

from inference.providers.base import (
    Completion,
    Provider,
    ProviderError,
    ProviderRequest,
    UsageMeter,
)

__all__ = ["Completion", "Provider", "ProviderError", "ProviderRequest", "UsageMeter"]
