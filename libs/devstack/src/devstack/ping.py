"""`python -m devstack.ping <service>`: exit 0 when the service answers its ping (healthchecks)."""

from __future__ import annotations

import asyncio
import sys

import nats

from contracts import subjects
from contracts.rpc import Pong
from contracts.settings import LivechatSettings

__all__ = ["ping"]


async def ping(service: str, settings: LivechatSettings, timeout: float = 2.0) -> bool:
    nc = await nats.connect(**settings.nats_connect_options(), connect_timeout=timeout)
    try:
        reply = await nc.request(subjects.ping(service), b"{}", timeout=timeout)
        return Pong.model_validate_json(reply.data).service == service
    except Exception:
        return False
    finally:
        await nc.close()


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m devstack.ping <inference|memory|usage>", file=sys.stderr)
        return 2
    try:
        ok = asyncio.run(ping(sys.argv[1], LivechatSettings()))
    except Exception:
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
