"""A configuration that can never work ends `make dev` (and a service) at once, with one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.ports import free_port, port_is_free
from devstack.runner import DevStack, ServiceRefusedConfig, _Child
from devstack.settings import DevSettings
from runtime.config_errors import CONFIG_EXIT_CODE


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    env.update(LIVECHAT_DATA_DIR=str(tmp_path / "data"), LIVECHAT_LOG_LEVEL="WARNING")
    env.update(settings)
    return env


def _run(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Exit code and the lines on stderr and stdout. A configuration error is said once
    and never restarted: a restart loop would print more lines (and end past the timeout)."""
    done = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=60
    )
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return done.returncode, lines


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held by this test whose neighbour below is free (a metrics base for
    `test_dev_refuses_a_metrics_port_taken_by_another_process`; other tests run beside)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port: int = holder.getsockname()[1]
            if port_is_free(port - 1):
                yield port
                return
    raise AssertionError("no port with a free neighbour")


def test_dev_with_the_http_port_taken_ends_at_once_naming_the_setting(tmp_path, taken_port):
    code, lines = _run(["-m", "devstack"], _env(tmp_path, LIVECHAT_HTTP_PORT=str(taken_port)))
    assert code == CONFIG_EXIT_CODE
    [line] = lines
    assert line.startswith("make dev: configuration error: LIVECHAT_HTTP_PORT=")
    assert f"127.0.0.1:{taken_port} is already in use" in line
    fix = f"set LIVECHAT_HTTP_PORT to a free port (e.g. LIVECHAT_HTTP_PORT={taken_port + 1})"
    assert fix in line
    assert not (tmp_path / "data" / "nats").exists()  # nothing was started


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("LIVECHAT_WS_MAX_FRAME_BYTES", "100", "greater than or equal to 1024"),
        ("LIVECHAT_HTTP_PORT", "80000", "less than or equal to 65535"),
        ("LIVECHAT_METRICS_PORT", "-1", "greater than or equal to 0"),
        ("LIVECHAT_MAX_BODY_BYTES", "10", "greater than or equal to 1024"),
    ],
)
def test_dev_with_a_value_out_of_range_ends_at_once_with_one_line(tmp_path, setting, value, says):
    env = _env(tmp_path, **{"LIVECHAT_HTTP_PORT": str(free_port()), setting: value})
    code, lines = _run(["-m", "devstack"], env)
    assert code == CONFIG_EXIT_CODE
    [line] = lines
    assert line.startswith("make dev: configuration error:")
    assert f"{setting}: Input should be {says}" in line
    assert value not in line.split(":", 2)[2].replace(says, "")  # values are never echoed


def test_dev_refuses_a_metrics_port_base_without_room_for_every_service(tmp_path):
    env = _env(tmp_path, LIVECHAT_HTTP_PORT=str(free_port()), LIVECHAT_METRICS_PORT="65534")
    code, lines = _run(["-m", "devstack"], env)
    assert code == CONFIG_EXIT_CODE
    [line] = lines
    assert "LIVECHAT_METRICS_PORT=65534" in line and "at most 65533" in line


def test_dev_refuses_a_metrics_port_taken_by_another_process(tmp_path, taken_port):
    # The base is free, but usage's port (base + 1) is taken.
    env = _env(tmp_path, LIVECHAT_HTTP_PORT=str(free_port()))
    env["LIVECHAT_METRICS_PORT"] = str(taken_port - 1)
    code, lines = _run(["-m", "devstack"], env)
    assert code == CONFIG_EXIT_CODE
    [line] = lines
    assert f"LIVECHAT_METRICS_PORT={taken_port - 1}: make dev gives usage" in line
    assert f":{taken_port} (base + 1), which is already in use" in line


def test_a_service_alone_with_its_port_taken_ends_with_one_line(tmp_path, taken_port):
    env = _env(tmp_path, LIVECHAT_HTTP_PORT=str(taken_port))
    code, lines = _run(["-m", "gateway"], env)
    assert code == CONFIG_EXIT_CODE
    [line] = lines
    assert line.startswith("gateway: configuration error: LIVECHAT_HTTP_PORT=")


def test_a_service_alone_with_a_bad_value_ends_with_one_line(tmp_path):
    code, lines = _run(["-m", "usage"], _env(tmp_path, LIVECHAT_DAILY_TOKEN_BUDGET="-5"))
    assert code == CONFIG_EXIT_CODE
    assert lines == [
        "usage: configuration error: LIVECHAT_DAILY_TOKEN_BUDGET: Input should be greater "
        "than or equal to 0 (change it in the environment and start again)"
    ]


@pytest.mark.parametrize("program", ["devstack", "gateway"])
def test_a_jwt_secret_shorter_than_32_bytes_is_refused_with_one_line(tmp_path, program):
    secret = "x" * 31
    env = _env(tmp_path, LIVECHAT_HTTP_PORT=str(free_port()), LIVECHAT_JWT_SECRET=secret)
    code, lines = _run(["-m", program], env)
    assert code == CONFIG_EXIT_CODE
    [line] = lines
    said = "LIVECHAT_JWT_SECRET: 31 bytes, shorter than the 32 HS256 needs; make one with python"
    assert said in line
    assert secret not in line  # never echoed
    assert not (tmp_path / "data" / "nats").exists()  # nothing was started


def test_the_supervisor_does_not_restart_a_service_that_refused_its_configuration(tmp_path):
    stack = DevStack(DevSettings(data_dir=tmp_path, max_restarts=5), env={})
    refused = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({CONFIG_EXIT_CODE})"])
    refused.wait()
    stack._children["usage"] = _Child("usage", refused)
    with pytest.raises(ServiceRefusedConfig, match="usage refused its configuration"):
        stack._check_children()
    assert stack._children["usage"].process is refused  # not spawned again


def _free_ports(count: int) -> int:
    """A base port with `count` free ports from it."""
    for _ in range(50):
        base = free_port()
        if base + count <= 65535 and all(port_is_free(base + i) for i in range(count)):
            return base
    raise AssertionError("no run of free ports")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.mark.nats
def test_dev_gives_each_service_its_metrics_port_and_tells_the_nats_url(tmp_path):
    port, base = free_port(), _free_ports(3)
    env = _env(tmp_path, LIVECHAT_HTTP_PORT=str(port), LIVECHAT_METRICS_PORT=str(base))
    runner = subprocess.Popen(
        [sys.executable, "-m", "devstack"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdout is not None
        first = runner.stdout.readline()
        deadline = time.monotonic() + 90
        while not _ready(f"http://127.0.0.1:{port}/readyz"):
            assert runner.poll() is None, "make dev exited during start"
            assert time.monotonic() < deadline, "make dev never became ready"
            time.sleep(0.2)
        # memory, usage, inference: base + 0, 1, 2, each its own /metrics.
        for offset in range(3):
            assert _ready(f"http://127.0.0.1:{base + offset}/metrics"), offset
        url = (tmp_path / "data" / "nats-url").read_text().strip()
        assert url.startswith("nats://127.0.0.1:")
        assert first.startswith(f"embedded nats-server with JetStream at {url} ")
        assert str(tmp_path / "data" / "nats-url") in first
        runner.send_signal(signal.SIGINT)
        assert runner.wait(60) == 0
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def test_a_service_alone_says_first_which_nats_it_connects_to(tmp_path):
    env = _env(tmp_path, LIVECHAT_LOG_LEVEL="INFO", LIVECHAT_NATS_URL="nats://u:secret@127.0.0.1:1")
    service = subprocess.Popen(
        [sys.executable, "-m", "usage"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert service.stderr is not None
        first = service.stderr.readline()
    finally:
        service.kill()
        service.wait()
    assert "usage connects to NATS at nats://127.0.0.1:1" in first
    assert "secret" not in first

    env.pop("LIVECHAT_NATS_URL")
    service = subprocess.Popen(
        [sys.executable, "-m", "usage"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        assert service.stderr is not None
        first = service.stderr.readline()
    finally:
        service.kill()
        service.wait()
    assert "connects to NATS at nats://127.0.0.1:4222 (LIVECHAT_NATS_URL is unset" in first
