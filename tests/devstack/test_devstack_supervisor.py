"""`make dev` as an orchestrator: a service killed is started again and the log says so;
`LIVECHAT_INFERENCE_WORKERS` runs that many workers."""

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


def _services(runner: subprocess.Popen[bytes], module: str) -> list[psutil.Process]:
    found = []
    for child in psutil.Process(runner.pid).children(recursive=True):
        try:
            if child.cmdline()[-2:] == ["-m", module]:
                found.append(child)
        except psutil.Error:
            continue
    return found


def test_a_killed_service_is_restarted_and_the_log_says_so(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    env.update(
        LIVECHAT_DATA_DIR=str(tmp_path / "data"),
        LIVECHAT_HTTP_PORT=str(port),
        LIVECHAT_LOG_LEVEL="WARNING",
        LIVECHAT_INFERENCE_WORKERS="2",
    )
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        runner = subprocess.Popen(
            [sys.executable, "-m", "devstack"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    ready = f"http://127.0.0.1:{port}/readyz"
    try:
        deadline = time.monotonic() + 90
        while not _ready(ready):
            assert runner.poll() is None, "make dev exited during start"
            assert time.monotonic() < deadline, "make dev never became ready"
            time.sleep(0.2)
        assert len(_services(runner, "inference")) == 2

        [gateway] = _services(runner, "gateway")
        gateway.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 90
        while not (_ready(ready) and _services(runner, "gateway")):
            assert runner.poll() is None, "make dev ended when the gateway died"
            assert time.monotonic() < deadline, "the gateway never came back"
            time.sleep(0.2)
        [again] = _services(runner, "gateway")
        assert again.pid != gateway.pid
        text = log.read_text()
        assert "gateway was killed by SIGKILL" in text
        assert f"gateway restarted (pid {again.pid})" in text

        runner.send_signal(signal.SIGINT)
        assert runner.wait(60) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
