"""The web chat page at `/` and its static files under `/static/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from gateway.errors import ApiError

__all__ = ["STATIC_DIR", "router"]

router = APIRouter(include_in_schema=False)

STATIC_DIR = (Path(__file__).resolve().parent.parent / "static").resolve()

_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    # Module scripts load only with a JavaScript media type, whatever the OS's mime table says.
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# The page needs nothing from elsewhere; a markdown bug could at worst show text.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidated each load, so a new version is picked up at once.
    "Cache-Control": "no-cache",
}


def _file(relative: str) -> FileResponse:
    path = (STATIC_DIR / relative).resolve()
    media_type = _MEDIA_TYPES.get(path.suffix)
    if media_type is None or not path.is_relative_to(STATIC_DIR) or not path.is_file():
        raise ApiError(404, "not_found", "no such file")
    return FileResponse(path, media_type=media_type, headers=_HEADERS)


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    return _file("index.html")


@router.api_route("/static/{relative:path}", methods=["GET", "HEAD"])
async def static(relative: str) -> FileResponse:
    return _file(relative)
