"""The `make dev` settings: where the gateway listens, how the supervisor stops and restarts."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from contracts.settings import LivechatSettings

__all__ = ["DevSettings"]


class DevSettings(LivechatSettings):
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    # How long the services get to drain on Ctrl-C before they are killed.
    stop_timeout_seconds: float = Field(default=15.0, gt=0)
    # A service (or NATS node) that dies is restarted; after this many crashes in a
    # row, each soon after its start, the stack gives up.
    max_restarts: int = Field(default=5, ge=0)
    # A process that ran this long before it died starts a fresh count of restarts.
    stable_seconds: float = Field(default=30.0, gt=0)
    # A gateway that does not answer /healthz this long after its start is restarted.
    startup_seconds: float = Field(default=60.0, gt=0)
    # Embedded NATS (LIVECHAT_NATS_URL unset): 1 node, or a cluster of 3 (or 5) whose
    # streams and buckets get as many replicas.
    nats_cluster_size: int = Field(default=1, ge=1, le=5)
    # Inference worker processes sharing the work queue.
    inference_workers: int = Field(default=1, ge=1, le=32)

    @model_validator(mode="after")
    def _odd_cluster(self) -> Self:
        if self.nats_cluster_size % 2 == 0:
            raise ValueError(
                "LIVECHAT_NATS_CLUSTER_SIZE must be 1, 3 or 5: a cluster of an even size "
                "loses its majority with half of its nodes"
            )
        return self
