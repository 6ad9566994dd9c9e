"""The price table (LIVECHAT_PRICES): US dollars per million prompt and completion tokens."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Price", "PriceTable"]


class Price(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0)  # $ per million prompt tokens
    output: float = Field(ge=0)  # $ per million completion tokens


class PriceTable:
    """Prices by model. A model is looked up by its provider model id, then as
    `provider:model`, then by its alias, so one table serves every provider."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self._prices = dict(prices)

    def __bool__(self) -> bool:
        return bool(self._prices)

    def price(self, *, alias: str, provider: str, provider_model: str) -> Price | None:
        for key in (provider_model, f"{provider}:{provider_model}", alias):
            found = self._prices.get(key)
            if found is not None:
                return found
        return None

    def cost(
        self,
        *,
        alias: str,
        provider: str,
        provider_model: str,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> float | None:
        price = self.price(alias=alias, provider=provider, provider_model=provider_model)
        if price is None:
            return None
        return (prompt_tokens * price.input + completion_tokens * price.output) / 1_000_000
