"""A three-node NATS cluster (`LIVECHAT_NATS_CLUSTER_SIZE=3 make dev`) with two workers:
a node killed with SIGKILL under load costs no answer, what a client joined of each answer
is its stored text, and the supervisor brings the node back."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import nats
import pytest
from apiclients import get_conversation
from stacks import FAST_ENV, dev_stack, until

from bench.chaos.clients import ChatClient
from bench.chaos.record import Exchange
from contracts import subjects, topology
from devstack.runner import DevStack


def _leader_index(stack: DevStack, stream: str) -> int:
    """Which node leads `stream` (its replicas are on the others)."""

    async def leader() -> tuple[str, int]:
        nc = await nats.connect(servers=[node.url for node in stack.nats_nodes])
        try:
            info = await nc.jetstream(timeout=10).stream_info(stream)
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader is not None
        return info.cluster.leader, len(info.cluster.replicas or [])

    name, followers = asyncio.run(leader())
    assert followers == 2, f"{stream} is not on all three nodes"
    return int(name.removeprefix("n")) - 1


def _lead_on(stack: DevStack, stream: str, index: int) -> None:
    """Make the node `index` lead `stream` (a step-down with it preferred)."""

    async def step_down() -> None:
        nc = await nats.connect(servers=[node.url for node in stack.nats_nodes])
        try:
            js = nc.jetstream(timeout=10)
            for _ in range(20):
                info = await js.stream_info(stream)
                if info.cluster is not None and info.cluster.leader == f"n{index + 1}":
                    return
                ask = {"placement": {"preferred": f"n{index + 1}"}}
                subject = f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}"
                await nc.request(subject, json.dumps(ask).encode(), timeout=10)
                await asyncio.sleep(0.5)
            raise AssertionError(f"{stream} did not move to n{index + 1}")
        finally:
            await nc.close()

    asyncio.run(step_down())


def _without_workers(stack: DevStack) -> int:
    """A node no inference worker is connected to (two workers, three nodes)."""
    cluster = stack.nats_cluster
    assert cluster is not None
    for index in range(len(stack.nats_nodes)):
        url = f"{cluster.monitor_url(index)}/connz?subs=1"
        with urllib.request.urlopen(url, timeout=10) as reply:
            connections = json.load(reply)["connections"] or []
        subs = [sub for c in connections for sub in c.get("subscriptions_list") or []]
        if not any(sub.startswith(f"{subjects.PREFIX}.rpc.inference.") for sub in subs):
            return index
    raise AssertionError("a worker is connected to every node")


async def _final_messages(base_url: str, conversation_id: str, count: int) -> list[dict[str, Any]]:
    """The stored messages once `count` are there and none is streaming (or what is there
    after a while, for the assertion to show)."""
    messages: list[dict[str, Any]] = []
    for _ in range(300):
        response = await get_conversation(base_url, conversation_id)
        if response.status_code == 200:
            messages = response.json()["messages"]
            if len(messages) >= count and all(m["status"] != "streaming" for m in messages):
                break
        await asyncio.sleep(0.1)
    return messages


@pytest.mark.timeout(600)  # a whole cluster and eight conversations on a busy machine
async def test_a_nats_node_killed_under_load_costs_no_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="devstack")
    stack = dev_stack(
        tmp_path / "data", FAST_ENV, nats_cluster_size=3, inference_workers=2, max_restarts=5
    )
    await asyncio.to_thread(stack.start)
    supervisor = threading.Thread(target=stack.supervise, daemon=True)
    supervisor.start()
    try:
        assert len(stack.nats_nodes) == 3
        for stream in (topology.WORK_STREAM, topology.EVENTS_STREAM, "KV_LIVECHAT_CANCEL"):
            await asyncio.to_thread(_leader_index, stack, stream)

        far = time.monotonic() + 3600
        clients = [
            ChatClient(stack.gateway_url, "sse", 4, stop_at=far, seed=1, messages=10),
            ChatClient(stack.gateway_url, "ws", 4, stop_at=far, seed=2, messages=10),
        ]
        running = [asyncio.create_task(client.run()) for client in clients]

        def exchanges() -> list[Exchange]:
            return [e for client in clients for e in client.exchanges]

        async def kill_mid_answer(index: int) -> float:
            """SIGKILL node `index` while an answer streams (its beginning only yet);
            when it was killed."""
            while not any(0 < len(e.joined_tokens()) < 40 and not e.finished for e in exchanges()):
                assert not any(task.done() for task in running)
                await asyncio.sleep(0.01)
            pid = stack.nats_nodes[index].pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            victims.append(f"nats-server n{index + 1}")
            return time.monotonic()

        async def answered_since(moment: float, count: int) -> None:
            while sum(e.finished and e.sent_at > moment for e in exchanges()) < count:
                assert not any(task.done() for task in running)
                await asyncio.sleep(0.05)

        victims: list[str] = []
        await answered_since(0, 8)
        # The node leading the events stream (every token goes through it: those published
        # until another node leads it are dropped) dies in the middle of answers. No worker
        # is connected to it (their connections see nothing), and the chat stream's leader
        # is elsewhere (the answers are stored whole).
        events = await asyncio.to_thread(_without_workers, stack)
        await asyncio.to_thread(_lead_on, stack, topology.EVENTS_STREAM, events)
        chat = await asyncio.to_thread(_leader_index, stack, topology.CHAT_STREAM)
        if chat == events:
            await asyncio.to_thread(_lead_on, stack, topology.CHAT_STREAM, (events + 1) % 3)
        killed_at = await kill_mid_answer(events)
        await answered_since(killed_at, 4)
        # Then, with that node back, the one leading the chat stream (every message goes
        # through it).
        cluster = stack.nats_cluster
        assert cluster is not None
        await until(lambda: cluster.healthy(events), 120)
        chat = await asyncio.to_thread(_leader_index, stack, topology.CHAT_STREAM)
        killed_at = await kill_mid_answer(chat)
        # Answers keep completing: the messages sent after the kill are answered too.
        await asyncio.wait_for(asyncio.gather(*running), 300)
        assert sum(e.sent_at > killed_at for e in exchanges()) >= 8

        # Every message was answered once, and what streamed (tokens, a `resync` replacing
        # them where some were lost) is what was stored.
        for exchange in exchanges():
            assert exchange.refused is None, exchange
            assert len(exchange.terminals()) == 1, exchange
        for conversation in {e.conversation_id for e in exchanges()}:
            sent = [e for e in exchanges() if e.conversation_id == conversation]
            stored = await _final_messages(stack.gateway_url, conversation, 2 * len(sent))
            expected = {e.message_id: "user" for e in sent}
            expected |= {e.reply_id: "assistant" for e in sent}
            assert {m["id"]: m["role"] for m in stored} == expected
            replies = {m["id"]: m for m in stored}
            for exchange in sent:
                assert replies[exchange.reply_id]["content"] == exchange.joined_tokens()
    finally:
        stack.request_stop()
        supervisor.join(10)
        await asyncio.to_thread(stack.stop)

    # The supervisor saw each node die and started it again, and said so.
    log = caplog.text
    for victim in victims:
        assert f"{victim} was killed by SIGKILL" in log
        assert f"{victim} restarted" in log
