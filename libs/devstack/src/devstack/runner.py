"""The `make dev` supervisor: embedded NATS, then memory, usage, inference, gateway.

It behaves as an orchestrator would (compose's `restart:`, a Kubernetes Deployment):
a service or NATS node that dies is started again, and the log says so; a crash
soon after the start waits longer each time (0.2 s doubling to 5 s), and only a
crash loop of `max_restarts` in a row ends the stack. A service that stopped on its
configuration (exit code 78) is not restarted: it would only say it again.
"""

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
from pathlib import Path
from typing import IO

from devstack.natscluster import NatsCluster
from devstack.natsserver import NatsServer
from devstack.preflight import check_configuration, metrics_ports, service_of
from devstack.settings import DevSettings
from runtime.config_errors import CONFIG_EXIT_CODE, ConfigError

__all__ = ["NATS_URL_FILE", "SERVICES", "DevStack", "ServiceRefusedConfig", "processes"]

log = logging.getLogger("devstack")

# Start order; they stop in reverse, so the gateway stops taking requests first.
SERVICES = ("memory", "usage", "inference", "gateway")

_PR_SET_PDEATHSIG = 1


def processes(inference_workers: int = 1) -> tuple[str, ...]:
    """The processes of the stack in start order: one per service, and `inference`,
    `inference-2`, ... for several workers."""
    workers = ["inference"] + [f"inference-{i}" for i in range(2, inference_workers + 1)]
    return ("memory", "usage", *workers, "gateway")


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
    serving: bool = False  # the gateway answered /healthz since this start
    probed: float = 0.0


def _how(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
    return f"exited with {code}"


class DevStack:
    """Starts and supervises the embedded system; `stop()` leaves no process behind."""

    def __init__(
        self,
        settings: DevSettings,
        env: Mapping[str, str] | None = None,
        *,
        output: IO[bytes] | None = None,
    ) -> None:
        """`output`: where the services write (default: this process's stdout/stderr)."""
        self.settings = settings
        self._output = output
        self._env = dict(os.environ if env is None else env)
        self._nats: list[NatsServer] = []
        self._cluster: NatsCluster | None = None
        self.processes = processes(settings.inference_workers)
        self._children: dict[str, _Child] = {}
        # Crashes in a row per process (services and NATS nodes), and when each
        # dead one is due to start again.
        self._crashes: dict[str, int] = {}
        self._due: dict[str, float] = {}
        self._lock = threading.RLock()
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
        size = self.settings.nats_cluster_size
        if not self.settings.nats_url and size > 1:
            # Every stream and bucket on every node, unless told otherwise.
            env.setdefault("LIVECHAT_NATS_REPLICAS", str(size))
        self._service_env = metrics_ports(env, self.settings, self.processes)
        check_configuration(self.settings, self._service_env)
        if not self.settings.nats_url:
            url = self._start_nats(data_dir, size)
            (data_dir / NATS_URL_FILE).write_text(url + "\n")
            what = "nats-server" if size == 1 else f"cluster of {size} nats-servers"
            print(
                f"embedded {what} with JetStream at {url} (also in {data_dir / NATS_URL_FILE})",
                flush=True,
            )
            for service_env in self._service_env.values():
                service_env["LIVECHAT_NATS_URL"] = url
        for name in self.processes:
            self._spawn(name)
        self._wait_healthy()

    def _start_nats(self, data_dir: Path, size: int) -> str:
        if size == 1:
            node = NatsServer(data_dir / "nats")
            node.start()
            self._nats = [node]
            return node.url
        self._cluster = NatsCluster(data_dir / "nats", size)
        self._cluster.start()
        self._nats = list(self._cluster.nodes)
        return self._cluster.url

    @property
    def nats_cluster(self) -> NatsCluster | None:
        """The embedded cluster (LIVECHAT_NATS_CLUSTER_SIZE > 1)."""
        return self._cluster

    @property
    def nats_nodes(self) -> list[NatsServer]:
        """The embedded nats-server processes (none with LIVECHAT_NATS_URL set)."""
        return list(self._nats)

    def _spawn(self, name: str, restarts: int = 0) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", service_of(name)],
            env=self._service_env[name],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=self._output,
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
        with self._lock:
            if self._stopping.is_set():
                return
            for index, node in enumerate(self._nats):
                code = node.exit_code()
                if code is not None:
                    self._restart_later(f"nats-server n{index + 1}", code, node.started_at)
            for name, child in list(self._children.items()):
                code = child.process.poll()
                if code is None:
                    self._probe_startup(child)
                    continue
                if code == CONFIG_EXIT_CODE:
                    # Its configuration can never work: a restart would only say it again.
                    raise ServiceRefusedConfig(f"{name} refused its configuration")
                self._restart_later(name, code, child.started)
            self._restart_due()

    def _probe_startup(self, child: _Child) -> None:
        """A startup probe, as Kubernetes has: a gateway that does not answer /healthz
        within `startup_seconds` of its start is stuck starting, and is killed (then
        restarted like any process that died)."""
        if child.name != "gateway" or child.serving:
            return
        now = time.monotonic()
        if now - child.probed < 1.0:
            return
        child.probed = now
        try:
            with urllib.request.urlopen(f"{self.gateway_url}/healthz", timeout=1) as reply:
                child.serving = reply.status == 200
        except OSError:
            pass
        if not child.serving and now - child.started > self.settings.startup_seconds:
            log.warning(
                "gateway did not answer /healthz within %.0fs of its start; killing it",
                self.settings.startup_seconds,
            )
            child.process.kill()
            child.process.wait()

    def _restart_later(self, name: str, code: int, started: float) -> None:
        """Note a process found dead: due to start again after its backoff."""
        if name in self._due:
            return
        ran = time.monotonic() - started
        crashes = 1 if ran >= self.settings.stable_seconds else self._crashes.get(name, 0) + 1
        if crashes > self.settings.max_restarts:
            raise RuntimeError(f"{name} keeps exiting ({_how(code)} {crashes} times in a row)")
        self._crashes[name] = crashes
        delay = min(2.0 ** (crashes - 1) * 0.2, 5.0)
        self._due[name] = time.monotonic() + delay
        log.warning("%s %s after %.1fs; restarting it in %.1fs", name, _how(code), ran, delay)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for name, due in list(self._due.items()):
            if due > now:
                continue
            del self._due[name]
            if name.startswith("nats-server n"):
                node = self._nats[int(name.rsplit("n", 1)[1]) - 1]
                try:
                    node.start()
                except RuntimeError as error:  # e.g. its port not free yet: try again
                    log.warning("%s did not start again (%s); retrying", name, error)
                    self._due[name] = now + 1.0
                    continue
                log.warning("%s restarted (pid %s) at %s", name, node.pid, node.url)
            else:
                self._spawn(name, self._crashes.get(name, 0))
                log.warning("%s restarted (pid %s)", name, self._children[name].process.pid)

    def supervise(self) -> None:
        """Block until `stop()` is called, restarting services and NATS nodes that die."""
        while not self._stopping.wait(0.2):
            self._check_children()

    def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash would (tests); `restart` brings it back,
        or `supervise()` does."""
        with self._lock:
            child = self._children[name]
        child.process.kill()
        child.process.wait()

    def restart(self, name: str) -> None:
        with self._lock:
            child = self._children.get(name)
            if child is not None and child.process.poll() is None:
                child.process.terminate()
                child.process.wait(self.settings.stop_timeout_seconds)
            self._due.pop(name, None)
            self._spawn(name)

    def pid(self, name: str) -> int:
        with self._lock:
            return self._children[name].process.pid

    def request_stop(self) -> None:
        """Safe from a signal handler: `supervise()` returns, then call `stop()`."""
        self._stopping.set()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._stop_all()

    def _stop_all(self) -> None:
        for name in reversed(self.processes):
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
        for node in self._nats:
            node.stop()
        self._nats = []
