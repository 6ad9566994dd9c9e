"""Closed by default: `python -m gateway` refuses to serve everyone as one user on an
address others reach, unless auth is on or LIVECHAT_AUTH_DISABLED=1 says it is meant."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest

from devstack.ports import free_port
from gateway.access.exposure import is_loopback
from runtime.config_errors import CONFIG_EXIT_CODE

SECRET = "s" * 40


def _environ(**env: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    return {**clean, "LIVECHAT_LOG_LEVEL": "WARNING", **env}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_auth_off_on_a_public_address_is_refused_with_one_line(host: str) -> None:
    env = _environ(LIVECHAT_HTTP_HOST=host, LIVECHAT_HTTP_PORT="0")
    result = subprocess.run(
        [sys.executable, "-m", "gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == CONFIG_EXIT_CODE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gateway: configuration error: ")
    for how in ("LIVECHAT_JWT_SECRET", "LIVECHAT_API_KEYS", "LIVECHAT_AUTH_DISABLED=1"):
        assert how in lines[0]


@pytest.mark.parametrize(
    "env",
    [
        {"LIVECHAT_AUTH_DISABLED": "1"},
        {"LIVECHAT_JWT_SECRET": SECRET},
        {"LIVECHAT_API_KEYS": "key-1:alice"},
    ],
    ids=["disabled-explicitly", "jwt", "api-keys"],
)
async def test_a_public_address_serves_with_auth_or_when_told_auth_is_off(
    nats_url: str, env: dict[str, str]
) -> None:
    port = free_port()
    environ = _environ(
        LIVECHAT_NATS_URL=nats_url,
        LIVECHAT_HTTP_HOST="0.0.0.0",
        LIVECHAT_HTTP_PORT=str(port),
        **env,
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", env=environ, stdout=asyncio.subprocess.DEVNULL
    )
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            response = None
            for _ in range(400):
                if process.returncode is not None:
                    break
                try:
                    response = await client.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            assert response is not None and response.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("LocalHost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_which_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
