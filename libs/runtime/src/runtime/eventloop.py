"""The event loop a service runs on: uvloop where it is installed, asyncio's own elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["loop_factory", "run"]

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory; None (asyncio's default loop) where it is not installed.

    Every socket write and timer of a service goes through the loop: uvloop's are
    several times cheaper. (The gateway gets it from uvicorn's `loop="auto"`.)
    """
    try:
        import uvloop
    except ImportError:  # Windows, or a minimal install
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the loop of `loop_factory`."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
