"""A CSV download paged from a backend: the exports (usage, feedback) stream it."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from fastapi.responses import StreamingResponse

from gateway.errors import ApiError

__all__ = ["Page", "csv_download"]

log = logging.getLogger(__name__)


class Page(Protocol):
    @property
    def cursor(self) -> str | None: ...


P = TypeVar("P", bound=Page)


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return out.getvalue()


async def csv_download(
    *,
    columns: Sequence[str],
    page: Callable[[str | None], Awaitable[P]],
    rows: Callable[[P], Sequence[Sequence[Any]]],
    filename: str,
) -> StreamingResponse:
    """The rows of every page (`page(cursor)`, from None until a page has no cursor)
    under a header of `columns`. `page` raises an ApiError when the backend does not
    answer."""
    # The first page before the response starts: a backend that does not answer is a
    # 503, not an empty file.
    first = await page(None)

    async def lines() -> AsyncIterator[str]:
        yield _csv([list(columns)])
        current = first
        while True:
            yield _csv(rows(current))
            if current.cursor is None:
                return
            try:
                current = await page(current.cursor)
            except ApiError:
                # The status is sent: aborting the response (no final chunk) is the
                # only signal left that the file is incomplete.
                log.warning("%s cut short: the backend did not answer", filename)
                raise

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
