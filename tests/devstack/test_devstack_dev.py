"""`make dev`: the whole system comes up, answers, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from devstack.ports import free_port

# Starts nats-server itself.
pytestmark = pytest.mark.nats


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def test_dev_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    env.update(
        LIVECHAT_DATA_DIR=str(tmp_path / "data"),
        LIVECHAT_HTTP_PORT=str(port),
        LIVECHAT_LOG_LEVEL="WARNING",
    )
    runner = subprocess.Popen([sys.executable, "-m", "devstack"], env=env)
    try:
        deadline = time.monotonic() + 90
        while not _ready(f"http://127.0.0.1:{port}/readyz"):
            assert runner.poll() is None, "make dev exited during start"
            assert time.monotonic() < deadline, "make dev never became ready"
            time.sleep(0.2)
        children = psutil.Process(runner.pid).children(recursive=True)
        names = " ".join(" ".join(c.cmdline()) for c in children)
        for part in ("nats-server", "-m memory", "-m usage", "-m inference", "-m gateway"):
            assert part in names
        assert (tmp_path / "data" / "nats" / "jetstream").is_dir()

        runner.send_signal(signal.SIGINT)
        assert runner.wait(60) == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
    finally:
        if runner.poll() is None:
            runner.kill()
