"""Who is calling. Auth is off for now: every caller is the local user.

Routes depend on `current_user`; turning auth on replaces this one seam.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

__all__ = ["LOCAL_USER", "current_user"]

LOCAL_USER = "local"


async def current_user(conn: HTTPConnection) -> str:
    return LOCAL_USER
