"""The memory service's metrics endpoint (LIVECHAT_METRICS_PORT): its consumer's backlog."""

from __future__ import annotations

from pathlib import Path

import httpx

from contracts import topology
from devstack.ports import free_port
from memory import MemorySettings, create_app


async def test_the_chat_consumer_backlog_is_exported(nats_url: str, tmp_path: Path) -> None:
    port = free_port()
    settings = MemorySettings(nats_url=nats_url, data_dir=tmp_path, metrics_port=port)
    app = create_app(settings)
    await app.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
            other = await http.get(f"http://127.0.0.1:{port}/")
    finally:
        await app.stop()
    assert response.status_code == 200
    labels = f'consumer="{topology.MEMORY_CONSUMER}",stream="{topology.CHAT_STREAM}"'
    assert f"livechat_consumer_pending{{{labels}}} 0.0" in response.text
    assert other.status_code == 404
