"""`make dev`: the whole system embedded; a configuration that cannot work is one line."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from devstack.runner import DevStack, ServiceRefusedConfig
from devstack.settings import DevSettings
from runtime.config_errors import CONFIG_EXIT_CODE, ConfigError, load_settings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        stack = DevStack(load_settings(DevSettings))
    except ConfigError as error:
        print(f"make dev: configuration error: {error}", file=sys.stderr, flush=True)
        return CONFIG_EXIT_CODE

    def _stop(signum: int, frame: FrameType | None) -> None:
        stack.request_stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        print(f"\nlivechat is up: {stack.gateway_url}  (Ctrl-C stops everything)\n", flush=True)
        stack.supervise()
    except ServiceRefusedConfig:
        return CONFIG_EXIT_CODE  # the service printed its one line
    except ConfigError as error:
        print(f"make dev: configuration error: {error}", file=sys.stderr, flush=True)
        return CONFIG_EXIT_CODE
    except RuntimeError as error:
        logging.getLogger("devstack").error("%s", error)
        return 1
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
