"""The whole system in tests (as `make dev` runs it) and waits on its public API."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from apiclients import get_conversation

from devstack.ports import free_port
from devstack.runner import DevStack
from devstack.settings import DevSettings

if TYPE_CHECKING:
    from fake_gemini import FakeGemini
    from fake_openai import FakeOpenAI

__all__ = [
    "FAST_ENV",
    "clean_environ",
    "dev_stack",
    "extra_gateway",
    "provider_env",
    "running_stack",
    "stored_conversation",
    "stored_messages",
    "two_gateways",
    "until",
    "wait_ready",
]

# A fast but visible pace, and short ack waits so a killed worker's request
# is redelivered within seconds.
FAST_ENV = {
    "LIVECHAT_DEMO_TTFT_MS": "30",
    "LIVECHAT_DEMO_TOKENS_PER_SECOND": "200",
    "LIVECHAT_ACK_WAIT_SECONDS": "2",  # inference
    "LIVECHAT_MEMORY_ACK_WAIT_SECONDS": "2",
    "LIVECHAT_HEARTBEAT_SECONDS": "0.5",
    "LIVECHAT_LOG_LEVEL": "WARNING",
}


def clean_environ(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without livechat settings or API keys, then `env`.

    Without a provider key the services answer with the offline demo model.
    """
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIVECHAT_") and not k.endswith("_API_KEY")
    }
    environ.update(env)
    return environ


def dev_stack(
    data_dir: Path, env: Mapping[str, str], *, nats_url: str | None = None, **dev: Any
) -> DevStack:
    """The system (not started yet) on a free port, its processes configured with `env`.

    With `nats_url` it uses that nats-server (one the test may stop and restart)
    instead of starting its own. `dev`: further `DevSettings` (nats_cluster_size, ...).
    """
    port = free_port()
    own = {"LIVECHAT_HTTP_PORT": str(port), "LIVECHAT_DATA_DIR": str(data_dir)}
    nats: dict[str, Any] = {}
    if nats_url is not None:
        own["LIVECHAT_NATS_URL"] = nats_url
        nats["nats_url"] = nats_url
    settings = DevSettings(data_dir=data_dir, http_port=port, **{"max_restarts": 0, **nats, **dev})
    return DevStack(settings, env=clean_environ({**env, **own}))


@contextmanager
def running_stack(
    data_dir: Path, env: Mapping[str, str], *, nats_url: str | None = None
) -> Iterator[DevStack]:
    """`dev_stack` started; stopped (no process left behind) when the block ends."""
    running = dev_stack(data_dir, env, nats_url=nats_url)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def extra_gateway(data_dir: Path, env: Mapping[str, str], nats_url: str) -> Iterator[str]:
    """Another gateway process on a system's nats-server, configured with `env`; its base
    URL (it may still be starting: see `wait_ready`). Terminated when the block ends."""
    port = free_port()
    own = {
        "LIVECHAT_HTTP_PORT": str(port),
        "LIVECHAT_DATA_DIR": str(data_dir),
        "LIVECHAT_NATS_URL": nats_url,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        env=clean_environ({**env, **own}),
        stdin=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def two_gateways(data_dir: Path, env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """The system plus a second gateway process on its nats-server, both configured with
    `env`: both base URLs (the second one may still be starting: see `wait_ready`)."""
    with running_stack(data_dir / "stack", env) as stack:
        nats_url = stack.nats_nodes[0].url
        with extra_gateway(data_dir / "gateway2", env, nats_url) as other_url:
            yield stack.gateway_url, other_url


async def wait_ready(base_url: str) -> dict[str, Any]:
    """The gateway's /readyz body once it answers 200 (it may still be starting)."""
    last = ""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for _ in range(600):
            try:
                response = await client.get("/readyz")
                if response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    return body
                last = response.text
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{base_url} never became ready: {last}")


async def stored_conversation(
    base_url: str, conversation_id: str, count: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The conversation once memory holds `count` messages, none of them still streaming
    (read as the user of `headers`, when auth is on)."""
    for _ in range(400):
        response = await get_conversation(base_url, conversation_id, headers)
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            messages = body["messages"]
            if len(messages) >= count and all(m["status"] != "streaming" for m in messages):
                return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{conversation_id} never held {count} final messages")


async def stored_messages(base_url: str, conversation_id: str, count: int) -> list[dict[str, Any]]:
    """The messages of `stored_conversation`."""
    messages: list[dict[str, Any]] = (await stored_conversation(base_url, conversation_id, count))[
        "messages"
    ]
    return messages


async def until(check: Callable[[], bool], within: float = 30.0) -> None:
    """Wait until `check` holds (no timed asserts: the deadline is only a safety net)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def provider_env(groq: FakeOpenAI, gemini: FakeGemini, **env: str) -> dict[str, str]:
    """The system's environment with the real Groq and Gemini SDKs pointed at the fakes."""
    return {
        **FAST_ENV,
        "GROQ_API_KEY": "gsk_fake",
        "GROQ_BASE_URL": groq.url,
        "GEMINI_API_KEY": "AIza_fake",
        "GOOGLE_GEMINI_BASE_URL": gemini.base_url,
        **env,
    }
