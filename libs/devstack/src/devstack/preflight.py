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

__all__ = ["METRICS_PORT", "check_configuration", "metrics_ports"]

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
_OWN_METRICS_PORT = ("memory", "usage", "inference")


def metrics_ports(
    env: Mapping[str, str], settings: DevSettings, services: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Each service's environment. A LIVECHAT_METRICS_PORT base gives each service with a
    metrics endpoint its own port, base + its place in `_OWN_METRICS_PORT` (memory,
    usage, inference): one port for all would have them fight over it."""
    envs = {name: {k: v for k, v in env.items() if k != METRICS_PORT} for name in services}
    base = settings.metrics_port
    if not base:
        return envs
    last = base + len(_OWN_METRICS_PORT) - 1
    if last > 65535:
        raise ConfigError(
            f"{METRICS_PORT}={base}: make dev gives memory, usage and inference the ports "
            f"{base}-{last}, beyond 65535; set {METRICS_PORT} to at most "
            f"{65536 - len(_OWN_METRICS_PORT)} (or 0: off)"
        )
    for offset, name in enumerate(_OWN_METRICS_PORT):
        if name in envs:
            envs[name][METRICS_PORT] = str(base + offset)
    return envs


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
    for name in _OWN_METRICS_PORT:
        port = int(envs.get(name, {}).get(METRICS_PORT, 0))
        if port and port_in_use(METRICS_PORT, settings.metrics_host, port) is not None:
            raise ConfigError(
                f"{METRICS_PORT}={settings.metrics_port}: make dev gives {name} "
                f"{settings.metrics_host}:{port} (base + {_OWN_METRICS_PORT.index(name)}), which "
                f"is already in use; set {METRICS_PORT} to a base whose "
                f"{len(_OWN_METRICS_PORT)} ports are free (or 0: off)"
            )
    for name, env in envs.items():
        settings_class = _settings_class(name) if name in _SETTINGS else None
        if settings_class is None:
            continue
        with _environment(env):
            try:
                load_settings(settings_class)
            except ConfigError as error:
                raise ConfigError(f"{name}: {error}") from None
