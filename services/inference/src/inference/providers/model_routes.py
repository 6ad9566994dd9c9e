"""Model aliases resolved to the routes a worker can call (table: contracts.aliases)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from contracts.aliases import AUTO, DEMO, GEMINI_DEFAULT_MODEL, GROQ_DEFAULT_MODEL, ModelRoute
from inference.settings import InferenceSettings

__all__ = [
    "DEMO",
    "GEMINI",
    "GROQ",
    "OPENAI",
    "Route",
    "UnknownModelError",
    "default_models",
    "resolve",
]

# The provider names routes use (`provider:model`).
GROQ = "groq"
GEMINI = "gemini"
OPENAI = "openai"


@dataclass(frozen=True, slots=True)
class Route:
    provider: str
    model: str  # the provider's own model id


class UnknownModelError(ValueError):
    """An alias that does not exist, or whose providers are not configured."""

    def __init__(self, alias: str) -> None:
        super().__init__(f"model {alias!r} is not available")
        self.alias = alias


def resolve(
    alias: str,
    table: Mapping[str, tuple[ModelRoute, ...]],
    available: Collection[str],
    default_models: Mapping[str, str],
) -> tuple[Route, ...]:
    """The routes of `alias` that can be called, in order.

    A route's provider must be in `available`; a route without a model id takes the
    provider's configured one from `default_models` (and is left out without one).
    `auto` with none of its providers configured is the offline demo model.
    """
    chain = table.get(alias)
    if chain is None:
        raise UnknownModelError(alias)
    routes: list[Route] = []
    for route in chain:
        model = route.model or default_models.get(route.provider)
        if route.provider in available and model and Route(route.provider, model) not in routes:
            routes.append(Route(route.provider, model))
    if not routes and alias == AUTO and DEMO in available:
        routes.append(Route(DEMO, default_models.get(DEMO, DEMO)))
    if not routes:
        raise UnknownModelError(alias)
    return tuple(routes)


def default_models(settings: InferenceSettings) -> dict[str, str]:
    """The model of a provider whose route names none (`auto`, `groq-llama-70b`,
    `gemini-flash`, `local`): GROQ_MODEL, GEMINI_MODEL, LIVECHAT_OPENAI_MODEL."""
    models = {
        DEMO: DEMO,
        GROQ: settings.groq_model or GROQ_DEFAULT_MODEL,
        GEMINI: settings.gemini_model or GEMINI_DEFAULT_MODEL,
    }
    if settings.openai_model:
        models[OPENAI] = settings.openai_model
    return models
