"""The message tree: a branch is the path from a first message down to its end.

Each message names its parent (None: a first message); the messages of one parent
are siblings, oldest first. A conversation reads as its active branch, ending at the
message its `active_message_id` names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from contracts.rpc import Siblings, StoredMessage

__all__ = ["branch_end", "children_of", "path_up", "with_siblings"]


def children_of(rows: Iterable[Any]) -> dict[str | None, list[str]]:
    """Each parent's children ids, in the order of `rows` (each with `id`, `parent_id`:
    stored messages or SQL rows, oldest first)."""
    children: dict[str | None, list[str]] = {}
    for row in rows:
        children.setdefault(row.parent_id, []).append(row.id)
    return children


def path_up(
    by_id: Mapping[str, StoredMessage], start: str | None, limit: int | None = None
) -> tuple[list[StoredMessage], bool]:
    """The path from `start` up towards the first message, newest first, at most `limit`
    messages; and whether it goes on past `limit`. `by_id` holds every stored message:
    a parent it lacks was pruned (LIVECHAT_HISTORY_MAX), so the path ends there, as in SQL."""
    path: list[StoredMessage] = []
    seen: set[str] = set()
    current = start
    while current is not None and current not in seen:
        message = by_id.get(current)
        if message is None:
            return path, False
        if limit is not None and len(path) == limit:
            return path, True
        path.append(message)
        seen.add(current)
        current = message.parent_id
    return path, False


def branch_end(children: Mapping[str | None, Sequence[str]], through: str) -> str:
    """The end of the branch going through `through`: down its newest children."""
    current, seen = through, {through}
    while kids := children.get(current):
        current = kids[-1]
        if current in seen:
            break
        seen.add(current)
    return current


def with_siblings(
    messages: Iterable[StoredMessage], children: Mapping[str | None, Sequence[str]]
) -> tuple[StoredMessage, ...]:
    """`messages`, each with its siblings (`children`: the ids of each parent's
    messages, oldest first)."""
    out = []
    for message in messages:
        ids = tuple(children.get(message.parent_id, ())) or (message.id,)
        index = ids.index(message.id) if message.id in ids else 0
        siblings = Siblings(index=index, count=len(ids), ids=ids)
        out.append(message.model_copy(update={"siblings": siblings}))
    return tuple(out)
