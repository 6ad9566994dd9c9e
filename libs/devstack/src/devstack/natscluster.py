"""An embedded JetStream cluster: N clustered nats-server processes on free ports."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

from devstack.natsserver import NatsServer
from devstack.ports import free_port

__all__ = ["CLUSTER_NAME", "NatsCluster"]

CLUSTER_NAME = "livechat"


class NatsCluster:
    """`size` nats-server processes routed to each other, each with JetStream under
    `store_dir/n<i>`, its client port, cluster port and monitoring port free ones.

    A node keeps its ports across a restart, so the others route to it again.
    """

    def __init__(self, store_dir: Path, size: int = 3, host: str = "127.0.0.1") -> None:
        if size < 1:
            raise ValueError("a cluster has at least one node")
        self.store_dir = Path(store_dir)
        self.host = host
        routes = [free_port(host) for _ in range(size)]
        monitors = [free_port(host) for _ in range(size)]
        self._monitors = monitors
        self.nodes: list[NatsServer] = []
        for i in range(size):
            others = ", ".join(
                f'"nats-route://{host}:{port}"' for j, port in enumerate(routes) if j != i
            )
            extra = (
                f'server_name: "n{i + 1}"\n'
                f'http: "{host}:{monitors[i]}"\n'
                "cluster {\n"
                f'  name: "{CLUSTER_NAME}"\n'
                f'  listen: "{host}:{routes[i]}"\n'
                f"  routes: [{others}]\n"
                "}\n"
            )
            node = NatsServer(self.store_dir / f"n{i + 1}", host=host, extra_config=extra)
            self.nodes.append(node)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """Every node's URL, comma-separated (what LIVECHAT_NATS_URL takes)."""
        return ",".join(self.urls)

    def start(self, timeout: float = 60.0) -> None:
        """Every node started, then until each says JetStream is ready (a meta leader
        elected): a stream created before that would fail."""
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        for index in range(len(self.nodes)):
            while not self.healthy(index):
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"the NATS cluster did not become ready within {timeout:.0f}s; "
                        f"see {self.store_dir}/n*/nats-server.log"
                    )
                time.sleep(0.1)

    def monitor_url(self, index: int) -> str:
        """Node `index`'s monitoring endpoint (`/healthz`, `/connz`, ...)."""
        return f"http://{self.host}:{self._monitors[index]}"

    def healthy(self, index: int) -> bool:
        """Whether node `index` answers its health check (JetStream current)."""
        url = f"{self.monitor_url(index)}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
