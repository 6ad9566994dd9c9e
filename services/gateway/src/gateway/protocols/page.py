"""The web chat page at `/` and its static files under `/static/` (conditional GETs: 304)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import NotModifiedResponse, StaticFiles
from starlette.types import Scope

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


class PageFiles(StaticFiles):
    """Starlette's static files (path checks, ETag, 304) with the page's media types and
    security headers; anything else is the API's 404."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code == 404:
                raise ApiError(404, "not_found", "no such file") from None
            raise

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        media_type = _MEDIA_TYPES.get(Path(full_path).suffix)
        if media_type is None:
            raise ApiError(404, "not_found", "no such file")
        response = FileResponse(
            full_path,
            status_code=status_code,
            headers=_HEADERS,
            media_type=media_type,
            stat_result=stat_result,
        )
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response


_files = PageFiles(directory=STATIC_DIR)


@router.api_route("/", methods=["GET", "HEAD"])
async def page(request: Request) -> Response:
    return await _files.get_response("index.html", request.scope)


router.mount("/static", _files, name="static")
