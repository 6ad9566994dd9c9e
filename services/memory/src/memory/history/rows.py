"""A stored message's columns as the API's `StoredMessage` (a read's row, or a row a
snapshot keeps)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from contracts.events import Usage
from contracts.rpc import ReplyError, StoredMessage

__all__ = ["stored_message"]


def stored_message(row: Mapping[Any, Any], prefix: str = "") -> StoredMessage:
    """The message in `row`, its columns named `prefix` + the column (a joined read
    names the reply's columns apart). The optional columns may be missing (a row a
    write built keeps only what it wrote)."""

    def get(name: str) -> Any:
        return row.get(prefix + name)

    usage = None
    if get("total_tokens") is not None:
        usage = Usage(
            prompt_tokens=get("prompt_tokens") or 0,
            completion_tokens=get("completion_tokens") or 0,
            total_tokens=get("total_tokens"),
        )
    error = None
    if get("error_code") is not None:
        error = ReplyError(
            code=get("error_code"),
            message=get("error_message") or "",
            retryable=bool(get("error_retryable")),
        )
    created_at: datetime = row[prefix + "created_at"]
    return StoredMessage(
        id=row[prefix + "id"],
        role=row[prefix + "role"],
        content=row[prefix + "content"],
        status=row[prefix + "status"],
        created_at=created_at.astimezone(UTC),
        user_id=get("user_id"),
        parent_id=get("parent_id"),
        model=get("model"),
        provider=get("provider"),
        usage=usage,
        finish_reason=get("finish_reason"),
        error=error,
    )
