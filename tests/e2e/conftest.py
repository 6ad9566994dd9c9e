"""The whole system as `make dev` runs it: embedded nats-server and four service processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devstack.ports import free_port
from devstack.runner import DevStack
from devstack.settings import DevSettings

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

StackFactory = Callable[..., DevStack]


def _stack(data_dir: Path, **env: str) -> DevStack:
    port = free_port()
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIVECHAT_") and not k.endswith("_API_KEY")
    }
    environ.update(FAST_ENV)
    environ.update(env)
    environ.update({"LIVECHAT_HTTP_PORT": str(port), "LIVECHAT_DATA_DIR": str(data_dir)})
    settings = DevSettings(data_dir=data_dir, http_port=port, max_restarts=0)
    return DevStack(settings, env=environ)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """One system shared by the tests of a module that do not break it."""
    running = _stack(tmp_path_factory.mktemp("stack"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[StackFactory]:
    """Systems of a test's own, for tests that kill and restart parts of them."""
    started: list[DevStack] = []

    def make(**env: str) -> DevStack:
        running = _stack(tmp_path / f"stack{len(started)}", **env)
        started.append(running)
        running.start()
        return running

    try:
        yield make
    finally:
        for running in started:
            running.stop()
