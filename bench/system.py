"""The whole system as `make dev` runs it, in a temporary data dir, stopped whatever happens."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import psutil

from devstack.ports import free_port
from devstack.runner import SERVICES, DevStack
from devstack.settings import DevSettings

__all__ = ["processes", "running_stack", "ws_url"]


_LOG_TAIL_LINES = 40


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout/stderr at `path` while services are spawned.

    They inherit the descriptors, so their logs go to the file, not into the table.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with path.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _print_tail(path: Path) -> None:
    with contextlib.suppress(OSError):
        lines = path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:]
        print(f"bench: the last lines the services logged ({path.name}):", file=sys.stderr)
        print("\n".join(lines), file=sys.stderr)


@contextlib.contextmanager
def running_stack(env: Mapping[str, str]) -> Iterator[DevStack]:
    with tempfile.TemporaryDirectory(prefix="livechat-bench-") as tmp:
        data_dir = Path(tmp)
        port = free_port()
        # Provider keys or a developer's LIVECHAT_* settings must not leak in.
        environ = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LIVECHAT_") and not k.endswith("_API_KEY")
        }
        environ.update({"LIVECHAT_LOG_LEVEL": "WARNING", **env})
        environ.update({"LIVECHAT_HTTP_PORT": str(port), "LIVECHAT_DATA_DIR": str(data_dir)})
        settings = DevSettings(data_dir=data_dir, http_port=port, max_restarts=0)
        stack = DevStack(settings, env=environ)
        log = data_dir / "services.log"
        try:
            with _output_to(log):
                stack.start()
            pids = ", ".join(f"{name} {stack.pid(name)}" for name in SERVICES)
            print(f"bench: system up at {stack.gateway_url} (pids: {pids})", file=sys.stderr)
            yield stack
        except Exception:
            _print_tail(log)
            raise
        finally:
            stack.stop()


def ws_url(stack: DevStack) -> str:
    return stack.gateway_url.replace("http://", "ws://", 1) + "/v1/ws"


def processes(stack: DevStack) -> dict[str, psutil.Process]:
    """Every process of the run: the services, the nats-server and this client."""
    found = {name: psutil.Process(stack.pid(name)) for name in SERVICES}
    me = psutil.Process()
    for child in me.children():
        with contextlib.suppress(psutil.Error):
            if child.name().startswith("nats-server"):
                found["nats-server"] = child
    found["bench client"] = me
    return found
