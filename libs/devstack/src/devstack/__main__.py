from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from devstack.runner import DevStack
from devstack.settings import DevSettings


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stack = DevStack(DevSettings())

    def _stop(signum: int, frame: FrameType | None) -> None:
        stack.request_stop()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        print(f"\nlivechat is up: {stack.gateway_url}  (Ctrl-C stops everything)\n", flush=True)
        stack.supervise()
    except RuntimeError as error:
        logging.getLogger("devstack").error("%s", error)
        return 1
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
