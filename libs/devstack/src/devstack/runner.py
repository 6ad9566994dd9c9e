"""The `make dev` supervisor: embedded NATS, then memory, usage, inference, gateway."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

from devstack.natsserver import NatsServer
from devstack.preflight import check_configuration, metrics_ports
from devstack.settings import DevSettings
from runtime.config_errors import CONFIG_EXIT_CODE, ConfigError

__all__ = ["NATS_URL_FILE", "SERVICES", "DevStack", "ServiceRefusedConfig"]

log = logging.getLogger("devstack")

# Start order; they stop in reverse, so the gateway stops taking requests first.
SERVICES = ("memory", "usage", "inference", "gateway")

_PR_SET_PDEATHSIG = 1

# Where `make dev` writes the embedded nats-server's URL (under LIVECHAT_DATA_DIR).
NATS_URL_FILE = "nats-url"


class ServiceRefusedConfig(ConfigError):
    """A service ended on its configuration; it said why in its own one line."""


def _die_with_parent() -> None:
    # A child must not outlive the supervisor, even if the supervisor is killed.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class _Child:
    name: str
    process: subprocess.Popen[bytes]
    restarts: int = 0
    started: float = field(default_factory=time.monotonic)


class DevStack:
    """Starts and supervises the embedded system; `stop()` leaves no process behind."""

    def __init__(self, settings: DevSettings, env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._env = dict(os.environ if env is None else env)
        self._nats: NatsServer | None = None
        self._children: dict[str, _Child] = {}
        self._stopping = threading.Event()
        self._service_env: dict[str, dict[str, str]] = {}

    @property
    def gateway_url(self) -> str:
        return f"http://{self.settings.http_host}:{self.settings.http_port}"

    def start(self) -> None:
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**self._env, "LIVECHAT_DATA_DIR": str(data_dir)}
        # Before anything starts: a setting that can never work is one line, not a loop.
        self._service_env = metrics_ports(env, self.settings, SERVICES)
        check_configuration(self.settings, self._service_env)
        if not self.settings.nats_url:
            self._nats = NatsServer(data_dir / "nats")
            self._nats.start()
            (data_dir / NATS_URL_FILE).write_text(self._nats.url + "\n")
            print(
                f"embedded nats-server with JetStream at {self._nats.url} "
                f"(also in {data_dir / NATS_URL_FILE})",
                flush=True,
            )
            for service_env in self._service_env.values():
                service_env["LIVECHAT_NATS_URL"] = self._nats.url
        for name in SERVICES:
            self._spawn(name)
        self._wait_healthy()

    def _spawn(self, name: str, restarts: int = 0) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", name],
            env=self._service_env[name],
            stdin=subprocess.DEVNULL,
            # Own session: Ctrl-C reaches only the supervisor, which stops the
            # services in order and the nats-server last.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._children[name] = _Child(name, process, restarts)

    def _wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                return
            self._check_children()
            try:
                with urllib.request.urlopen(f"{self.gateway_url}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"livechat did not become ready within {timeout:.0f}s")

    def _check_children(self) -> None:
        for name, child in list(self._children.items()):
            code = child.process.poll()
            if code is None or self._stopping.is_set():
                continue
            if code == CONFIG_EXIT_CODE:
                # Its configuration can never work: a restart would only say it again.
                raise ServiceRefusedConfig(f"{name} refused its configuration")
            if child.restarts >= self.settings.max_restarts:
                raise RuntimeError(f"{name} keeps exiting (last exit code {code})")
            log.warning("%s exited with %s; restarting it", name, code)
            time.sleep(min(2.0**child.restarts * 0.2, 5.0))
            self._spawn(name, child.restarts + 1)

    def supervise(self) -> None:
        """Block until `stop()` is called, restarting services that exit."""
        while not self._stopping.wait(0.5):
            self._check_children()

    def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash would (tests); `restart` brings it back."""
        child = self._children[name]
        child.process.kill()
        child.process.wait()

    def restart(self, name: str) -> None:
        child = self._children.get(name)
        if child is not None and child.process.poll() is None:
            child.process.terminate()
            child.process.wait(self.settings.stop_timeout_seconds)
        self._spawn(name)

    def pid(self, name: str) -> int:
        return self._children[name].process.pid

    def request_stop(self) -> None:
        """Safe from a signal handler: `supervise()` returns, then call `stop()`."""
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        for name in reversed(SERVICES):
            child = self._children.pop(name, None)
            if child is None or child.process.poll() is not None:
                continue
            child.process.send_signal(signal.SIGTERM)
            try:
                child.process.wait(self.settings.stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in time; killing it", name)
                child.process.kill()
                child.process.wait()
        if self._nats is not None:
            self._nats.stop()
            self._nats = None
