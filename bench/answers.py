"""Cost per answer: the bench provider directly and through livechat, unloaded, loaded, in a crowd.

One system, one provider process, every target in the same run: first one
conversation at a time per target, interleaved (the added time to first token
with nothing else going on), then `answers` answers per target with
`answers_concurrency` in flight (rates, TTFT and CPU per answer of each
process), then `crowd_conversations` conversations at once (SSE, WebSocket and
OpenAI in turn), one answer each.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping

import psutil

from bench.cpu import CpuMeter, settle
from bench.options import Options
from bench.provider import RunningProvider, answer_text, running_provider
from bench.results import AnswersPhase, AnswersResult
from bench.stats import StreamTiming
from bench.system import processes, running_stack, ws_url
from bench.targets import TARGETS, Endpoints, open_answers
from bench.through import Answer, run_conversations, run_count
from bench.workload import prompt
from devstack.runner import DevStack

__all__ = ["LIVECHAT_PROCESSES", "UNLOADED_TOKENS", "run_answers"]

ALIAS = "local"  # routes to the `openai` provider and its LIVECHAT_OPENAI_MODEL
PROVIDER_MODEL = "bench-provider"
LIVECHAT_PROCESSES = ("gateway", "inference", "memory", "usage", "nats-server")
# The unloaded answers are short: time to first token is what they measure.
UNLOADED_TOKENS = 2
_UNLOADED_PAUSE = 0.03  # seconds between two answers, for the last one's persistence
_CROWD_TARGETS = ("sse", "ws", "openai")


def _env(provider: RunningProvider, options: Options) -> dict[str, str]:
    most = max(options.answers_concurrency, options.crowd_conversations)
    return {
        "LIVECHAT_OPENAI_BASE_URL": f"{provider.url}/v1",
        "LIVECHAT_OPENAI_MODEL": PROVIDER_MODEL,
        # Every answer's generation runs at once, never queues for a slot.
        "LIVECHAT_MAX_CONCURRENCY": str(max(64, 2 * most)),
        # A load test is one user (auth off: `local`) with every stream and socket at
        # once: the per-user fair shares are off for the bench's own system.
        "LIVECHAT_MAX_IN_FLIGHT_PER_USER": "0",
        "LIVECHAT_MAX_CONNECTIONS_PER_USER": "0",
    }


def _say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


class _Scenario:
    def __init__(
        self, endpoints: Endpoints, found: Mapping[str, psutil.Process], options: Options
    ) -> None:
        self._endpoints = endpoints
        self._found = dict(found)
        self._livechat = {name: found[name] for name in LIVECHAT_PROCESSES if name in found}
        self._options = options
        self._expected = answer_text(options.answer_tokens)
        # One answer's length: the loaded runs' starts are spread over it.
        self._period = options.answer_tokens * options.token_interval_ms / 1000

    async def run(self) -> AnswersResult:
        o = self._options
        result = AnswersResult(concurrency=o.answers_concurrency)
        _say(f"unloaded: {o.unloaded_answers} answers per target, one at a time")
        result.unloaded = await self._unloaded()
        for target in TARGETS:
            _say(f"{target}: {o.answers} answers, {o.answers_concurrency} at once")
            result.loaded[target] = await self._loaded(target)
        if o.crowd_conversations:
            _say(f"crowd: {o.crowd_conversations} conversations at once")
            result.crowd = await self._crowd()
        return result

    async def _unloaded(self) -> dict[str, list[StreamTiming]]:
        found: dict[str, list[StreamTiming]] = {target: [] for target in TARGETS}
        tokens = min(UNLOADED_TOKENS, self._options.answer_tokens)
        async with open_answers(self._endpoints, TARGETS, max_tokens=tokens) as answers:
            await run_conversations(answers, rounds=2, period=0.0)  # warm-up
            for r in range(self._options.unloaded_answers):
                for target, answer in zip(TARGETS, answers, strict=True):
                    found[target].append(await answer(prompt(0, r)))
                    await asyncio.sleep(_UNLOADED_PAUSE)
        return found

    async def _measured(self, answers: list[Answer], total: int, period: float) -> AnswersPhase:
        meter = CpuMeter(self._found)
        meter.start()
        timings, wall = await run_count(answers, total, period=period)
        await settle(self._livechat)
        return AnswersPhase(timings, wall, meter.stop(), self._expected)

    async def _loaded(self, target: str) -> AnswersPhase:
        targets = [target] * self._options.answers_concurrency
        async with open_answers(self._endpoints, targets) as answers:
            await run_conversations(answers, rounds=1, period=self._period)  # warm-up
            await settle(self._livechat)
            return await self._measured(answers, self._options.answers, self._period)

    async def _crowd(self) -> AnswersPhase:
        """Every conversation sends its one message at once."""
        n = self._options.crowd_conversations
        targets = [_CROWD_TARGETS[k % len(_CROWD_TARGETS)] for k in range(n)]
        async with open_answers(self._endpoints, targets) as answers:
            return await self._measured(answers, n, 0.0)


def _endpoints(stack: DevStack, provider: RunningProvider) -> Endpoints:
    return Endpoints(stack.gateway_url, ws_url(stack), provider.url, ALIAS, PROVIDER_MODEL)


def run_answers(options: Options) -> AnswersResult:
    """Start the provider and the system, run the scenario, stop both whatever happens."""
    _say("cost per answer: starting the bench provider and the system")
    with (
        running_provider(options.answer_tokens, options.token_interval_ms) as provider,
        running_stack(_env(provider, options)) as stack,
    ):
        found = {**processes(stack), "bench provider": provider.process}
        scenario = _Scenario(_endpoints(stack, provider), found, options)
        return asyncio.run(scenario.run())
