"""Configuration errors that stop and speak: one line naming the setting, the problem, the fix.

A setting that can never work (a value out of range, a port in use, a conflicting
combination) ends the process with `CONFIG_EXIT_CODE` (sysexits' EX_CONFIG) and one line
on stderr; `make dev`'s supervisor recognises the code and does not restart the service.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

__all__ = [
    "CONFIG_EXIT_CODE",
    "ConfigError",
    "describe_settings_error",
    "env_name",
    "exit_on_config_error",
    "load_settings",
    "port_in_use",
    "settings_or_exit",
]

CONFIG_EXIT_CODE = 78  # EX_CONFIG (sysexits.h): a restart cannot help
ENV_PREFIX = "LIVECHAT_"

S = TypeVar("S", bound=BaseSettings)


class ConfigError(Exception):
    """A configuration that can never work; `str()` is the one line to show."""


def env_name(settings_class: type[BaseSettings], field: str) -> str:
    """The environment variable of `field` (its alias, else LIVECHAT_<FIELD>)."""
    info = settings_class.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    return ENV_PREFIX + field.upper()


def describe_settings_error(exc: ValidationError, settings_class: type[BaseSettings]) -> str:
    """One line for the settings refused: which variable, and why (never its value: some
    are secrets)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = error.get("loc", ())
        reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if loc:
            parts.append(f"{env_name(settings_class, str(loc[0]))}: {reason}")
        else:
            parts.append(reason)
    return "; ".join(parts) + " (change it in the environment and start again)"


def load_settings(settings_class: type[S]) -> S:
    """`settings_class()` from the environment, or `ConfigError` with one line."""
    try:
        return settings_class()
    except ValidationError as exc:
        raise ConfigError(describe_settings_error(exc, settings_class)) from None


def port_in_use(variable: str, host: str, port: int) -> ConfigError | None:
    """A `ConfigError` when `host:port` cannot be bound (someone else listens there)."""
    if port == 0:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            problem = "is already in use"
            if exc.errno != errno.EADDRINUSE:
                problem = f"cannot be bound ({exc.strerror})"
            return ConfigError(
                f"{variable}={port}: {host}:{port} {problem}; stop what uses it or set "
                f"{variable} to a free port (e.g. {variable}={port + 1})"
            )
    return None


def exit_on_config_error(error: ConfigError, program: str) -> NoReturn:
    """Print the one line and exit with `CONFIG_EXIT_CODE`."""
    print(f"{program}: configuration error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(CONFIG_EXIT_CODE)


def settings_or_exit(settings_class: type[S], program: str, *port_fields: str) -> S:
    """A service's settings, checked before anything starts: a refused value, or a port
    of `port_fields` (bound on the matching `*_host`) in use, ends the process with one
    line and `CONFIG_EXIT_CODE`."""
    try:
        settings = load_settings(settings_class)
        for field in port_fields:
            host = getattr(settings, field.removesuffix("_port") + "_host")
            busy = port_in_use(env_name(settings_class, field), host, getattr(settings, field))
            if busy is not None:
                raise busy
    except ConfigError as error:
        exit_on_config_error(error, program)
    return settings
