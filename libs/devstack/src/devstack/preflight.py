"""Before `make dev` starts anything: each service's environment, and the settings that
can never work (a value out of range, a port in use) refused with one line."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from unittest import mock

from pydantic_settings import BaseSettings

from devstack.settings import DevSettings
from runtime.config_errors import ConfigError, load_settings, port_in_use

__all__ = ["METRICS_PORT", "check_configuration", "metrics_ports", "service_of"]

METRICS_PORT = "LIVECHAT_METRICS_PORT"
HTTP_PORT = "LIVECHAT_HTTP_PORT"

# Each service's settings class (imported here only to check them before the start).
_SETTINGS = {
    "memory": "memory.settings:MemorySettings",
    "usage": "usage.settings:UsageSettings",
    "inference": "inference.settings:InferenceSettings",
    "gateway": "gateway.settings:GatewaySettings",
}
# The gateway serves /metrics on its HTTP port: it takes no metrics port of its own.
_NO_METRICS_PORT = ("gateway",)


def service_of(process: str) -> str:
    """The service a process of `make dev` runs: `inference-2` is an inference worker."""
    return process.partition("-")[0]


def metrics_ports(
    env: Mapping[str, str], settings: DevSettings, processes: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Each process's environment. A LIVECHAT_METRICS_PORT base gives each process with a
    metrics endpoint its own port, base + its place among them (memory, usage, then the
    inference workers): one port for all would have them fight over it."""
    envs = {name: {k: v for k, v in env.items() if k != METRICS_PORT} for name in processes}
    base = settings.metrics_port
    if not base:
        return envs
    own = _own_metrics_port(processes)
    last = base + len(own) - 1
    if last > 65535:
        raise ConfigError(
            f"{METRICS_PORT}={base}: make dev gives {_listed(own)} the ports "
            f"{base}-{last}, beyond 65535; set {METRICS_PORT} to at most "
            f"{65536 - len(own)} (or 0: off)"
        )
    for offset, name in enumerate(own):
        envs[name][METRICS_PORT] = str(base + offset)
    return envs


def _own_metrics_port(processes: Sequence[str]) -> list[str]:
    return [name for name in processes if service_of(name) not in _NO_METRICS_PORT]


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    with mock.patch.dict(os.environ, env, clear=True):
        yield


def _settings_class(name: str) -> type[BaseSettings] | None:
    module_name, _, class_name = _SETTINGS[name].partition(":")
    logging.disable(logging.INFO)  # what the service packages log while imported
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None  # not installed here: the service checks its own at its start
    finally:
        logging.disable(logging.NOTSET)
    settings_class: type[BaseSettings] = getattr(module, class_name)
    return settings_class


def check_configuration(settings: DevSettings, envs: Mapping[str, Mapping[str, str]]) -> None:
    """`ConfigError` (one line) for the first setting of any service that cannot work."""
    busy = port_in_use(HTTP_PORT, settings.http_host, settings.http_port)
    if busy is not None:
        raise busy
    own = _own_metrics_port(list(envs))
    for offset, name in enumerate(own):
        port = int(envs[name].get(METRICS_PORT, 0))
        if port and port_in_use(METRICS_PORT, settings.metrics_host, port) is not None:
            raise ConfigError(
                f"{METRICS_PORT}={settings.metrics_port}: make dev gives {name} "
                f"{settings.metrics_host}:{port} (base + {offset}), which "
                f"is already in use; set {METRICS_PORT} to a base whose "
                f"{len(own)} ports are free (or 0: off)"
            )
    if settings.nats_url is None and settings.nats_replicas > settings.nats_cluster_size:
        raise ConfigError(
            f"LIVECHAT_NATS_REPLICAS={settings.nats_replicas}: the embedded NATS has "
            f"{settings.nats_cluster_size} node(s); set LIVECHAT_NATS_CLUSTER_SIZE to at least "
            "as many, or lower LIVECHAT_NATS_REPLICAS"
        )
    checked: set[str] = set()
    for name, env in envs.items():
        service = service_of(name)
        if service in checked:
            continue  # the workers of a service share their settings
        checked.add(service)
        settings_class = _settings_class(service) if service in _SETTINGS else None
        if settings_class is None:
            continue
        with _environment(env):
            try:
                load_settings(settings_class)
            except ConfigError as error:
                raise ConfigError(f"{name}: {error}") from None
