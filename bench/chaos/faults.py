"""The killer: `kill -9` at random moments of a NATS node, a worker, memory, usage or the
gateway of a running stack, whose supervisor starts each one again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from nats.js import JetStreamContext

from bench.chaos.settle import holds
from contracts import topology
from devstack.runner import DevStack

# The streams whose replicas must be current before a NATS node dies, with their
# consumers; the key-value buckets are streams too.
_STREAMS = (
    (topology.CHAT_STREAM, (topology.MEMORY_CONSUMER,)),
    (topology.WORK_STREAM, (topology.INFERENCE_CONSUMER,)),
    (topology.EVENTS_STREAM, ()),
    (topology.USAGE_STREAM, (topology.USAGE_CONSUMER,)),
    *((f"KV_{bucket}", ()) for bucket in (topology.RATE_BUCKET, topology.CANCEL_BUCKET)),
    (f"KV_{topology.BUDGET_BUCKET}", ()),
)


async def _replicas_current(urls: list[str]) -> bool:
    async def current(js: JetStreamContext) -> bool:
        for stream, durables in _STREAMS:
            infos = [await js.stream_info(stream)]
            infos += [await js.consumer_info(stream, durable) for durable in durables]
            for info in infos:
                cluster = info.cluster
                if cluster is None or cluster.leader is None:
                    return False
                if any(not peer.current for peer in cluster.replicas or []):
                    return False
        return True

    return await holds(urls, current)


__all__ = ["KINDS", "Kill", "Killer"]

KINDS = ("nats", "worker", "memory", "usage", "gateway")


@dataclass(frozen=True, slots=True)
class Kill:
    kind: str
    target: str  # the process: "nats-server n2", "inference-2", ...
    at: float  # time.monotonic()


@dataclass
class Killer:
    """Kills one process every `every` seconds on average (uniformly 0.5-1.5 x), each
    kind in turn in a shuffled order, until `stop_at`. A NATS node is killed only while
    every node answers its health check: the cluster survives the loss of one node."""

    stack: DevStack
    stop_at: float
    every: float = 15.0
    seed: int | None = None
    kills: list[Kill] = field(default_factory=list)

    def counts(self) -> Counter[str]:
        return Counter(kill.kind for kill in self.kills)

    async def run(self) -> None:
        rng = random.Random(self.seed)
        order: list[str] = []
        while True:
            await asyncio.sleep(self.every * (0.5 + rng.random()))
            if time.monotonic() >= self.stop_at:
                return
            if not order:
                order = list(KINDS)
                rng.shuffle(order)
            kind = order.pop()
            target = await self._kill(kind, rng)
            if target is not None:
                self.kills.append(Kill(kind, target, time.monotonic()))

    async def _cluster_healthy(self) -> None:
        """Until every node answers its health check and every stream and consumer has all
        its replicas current: a node is lost only once the last one has caught up."""
        cluster = self.stack.nats_cluster
        if cluster is None:
            return
        for _ in range(600):
            checks = (asyncio.to_thread(cluster.healthy, i) for i in range(len(cluster.nodes)))
            if all(await asyncio.gather(*checks)) and await _replicas_current(cluster.urls):
                return
            await asyncio.sleep(0.5)

    async def _kill(self, kind: str, rng: random.Random) -> str | None:
        if kind == "nats":
            nodes = self.stack.nats_nodes
            if len(nodes) < 3:
                return None  # a single node is not killed: that is a restart, part of (4)
            await self._cluster_healthy()
            if time.monotonic() >= self.stop_at:
                return None
            index = rng.randrange(len(nodes))
            pid = nodes[index].pid
            target = f"nats-server n{index + 1}"
        else:
            name = {"memory": "memory", "usage": "usage", "gateway": "gateway"}.get(kind)
            if name is None:
                workers = [p for p in self.stack.processes if p.startswith("inference")]
                name = rng.choice(workers)
            try:
                pid = self.stack.pid(name)
            except KeyError:
                return None
            target = name
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            return target
        return None
