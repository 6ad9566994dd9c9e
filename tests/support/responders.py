"""Asking a service that has just started: nats-server (2.15 here) now and then answers
the first request to a subscription made and flushed an instant before on another
connection with "no responders" (about 1 run in 10 of such a test); it is asked again."""

from __future__ import annotations

import asyncio
import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError

__all__ = ["ask"]


async def ask(nc: Client, subject: str, payload: bytes = b"", timeout: float = 5.0) -> Msg:
    """`nc.request`, asked again while nobody is said to listen, for up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await nc.request(subject, payload, timeout=timeout)
        except NoRespondersError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.05)
