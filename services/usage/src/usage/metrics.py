"""Prometheus metrics of the usage service (runtime.metrics serves them).

Token, latency and cost metrics are counted once per ledger entry (when its row is
inserted), so their sum over every usage replica is exact.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry, Counter, Histogram

from runtime.metrics import ConsumerBacklog
from usage.entries import Row

__all__ = ["UsageMetrics"]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class UsageMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tokens = Counter(
            "livechat_tokens",
            "Tokens accounted, by provider, provider model and direction (in = prompt)",
            ["provider", "model", "direction"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "livechat_generation_attempts",
            "Ledger entries, by provider and outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.cost = Counter(
            "livechat_cost_usd",
            "Cost of the accounted tokens in US dollars (priced models only)",
            ["provider", "model"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "livechat_time_to_first_token_seconds",
            "Time from the provider call to its first token",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "livechat_generation_duration_seconds",
            "Duration of a provider call",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backlog = ConsumerBacklog(self.registry)

        self._children: dict[tuple[str, str, str], _Children] = {}

    def recorded(self, row: Row) -> None:
        """Count the ledger entry inserted as `row`."""
        key = (row["provider"], row["provider_model"], row["outcome"])
        children = self._children.get(key)
        if children is None:  # label lookups cost more than the updates: once per key
            children = self._children[key] = _Children(self, *key)
        children.tokens_in.inc(row["prompt_tokens"])
        children.tokens_out.inc(row["completion_tokens"])
        children.attempts.inc()
        if row["cost_usd"]:
            children.cost.inc(row["cost_usd"])
        if row["time_to_first_token_ms"] is not None:
            children.ttft.observe(row["time_to_first_token_ms"] / 1000)
        children.duration.observe(row["duration_ms"] / 1000)

    async def observe_consumer(self, js: JetStreamContext, stream: str, consumer: str) -> None:
        await self.backlog.observe(js, stream, consumer)


class _Children:
    """The labelled series one (provider, model, outcome) updates."""

    def __init__(self, metrics: UsageMetrics, provider: str, model: str, outcome: str) -> None:
        self.tokens_in = metrics.tokens.labels(provider, model, "in")
        self.tokens_out = metrics.tokens.labels(provider, model, "out")
        self.attempts = metrics.attempts.labels(provider, outcome)
        self.cost = metrics.cost.labels(provider, model)
        self.ttft = metrics.ttft.labels(provider, model)
        self.duration = metrics.duration.labels(provider, model)
