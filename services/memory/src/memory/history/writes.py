"""Storing a batch of chat events with a handful of set-based statements.

The outcome is the one of storing the events one after the other: each message
is kept once (keyed by conversation and message id), a final assistant message is
never replaced, an event into another user's conversation is ignored, a
conversation's activity time only moves forward, and (LIVECHAT_HISTORY_MAX) only its
newest messages are kept. Events that repeat a message key
already in the batch go into a later round, so that order still decides.

The message tree: a user message without a parent follows the end of the active
branch (then ends it); a reply follows the user message it answers, and ends the
branch when that message did (or when it is a regeneration). A user message sent
while the reply to the one before was in flight follows that reply once it is
stored, so quick messages still make one branch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row

from contracts.events import ChatEvent, GenerationFailed, GenerationFinished, UserMessageAccepted
from memory.history.snapshots import WriteLog
from memory.history.statements import Statements
from memory.history.store import StoreOutcome
from memory.history.titles import derive_title

__all__ = ["write_events"]

log = logging.getLogger("memory.history.repository")


def write_events(
    conn: Connection, sql: Statements, events: Sequence[ChatEvent], changes: WriteLog | None = None
) -> list[StoreOutcome]:
    """Store `events` in order on `conn` (inside the caller's transaction); what they
    changed is added to `changes` (for `memory.history.snapshots`, once committed).

    Blocking: on a SQLite file the repository runs it whole in one worker thread, on
    the async engine through `run_sync`."""
    log = changes if changes is not None else WriteLog()
    outcomes: list[StoreOutcome] = []
    for round_ in _rounds(events):
        outcomes += _write_round(conn, sql, round_, log)
    return outcomes


def _rounds(events: Sequence[ChatEvent]) -> list[list[ChatEvent]]:
    rounds: list[list[ChatEvent]] = [[]]
    keys: set[tuple[str, str]] = set()
    for event in events:
        key = (event.conversation_id, event.message_id)
        if key in keys:
            rounds.append([])
            keys = set()
        keys.add(key)
        rounds[-1].append(event)
    return rounds


@dataclass(slots=True)
class _Touch:
    """What the stored events of a round change in one conversation."""

    at: datetime
    title: str | None = None
    system_prompt: str | None = None

    def add(self, at: datetime, title: str | None, system_prompt: str | None) -> None:
        self.at = max(self.at, at)
        # The first title fills an empty one; a later system prompt replaces an earlier.
        if self.title is None:
            self.title = title
        if system_prompt is not None:
            self.system_prompt = system_prompt


def _write_round(
    conn: Connection, sql: Statements, events: list[ChatEvent], changes: WriteLog
) -> list[StoreOutcome]:
    # 1. Create the conversations that do not exist yet, each from its first event here.
    #    On SQLite a write first: it takes the write lock at once, where a read first
    #    could fail on a concurrent writer's commit instead of waiting. On PostgreSQL the
    #    conversations are read first and only those missing are claimed (then read):
    #    most events go to conversations that exist.
    #    A deleted conversation comes back only through an event newer than its deletion.
    firsts: dict[str, ChatEvent] = {}  # each conversation's first event here
    fresh: dict[str, datetime] = {}  # and its newest event's time
    for event in events:
        conversation_id = event.conversation_id
        if conversation_id not in firsts:
            firsts[conversation_id] = event
            fresh[conversation_id] = event.created_at
        elif fresh[conversation_id] < event.created_at:
            fresh[conversation_id] = event.created_at

    def claim(ids: list[str]) -> None:
        conn.execute(sql.claim, [_conversation_row(firsts[cid], fresh[cid]) for cid in ids])

    found: list[Row[Any]]
    if sql.read_first:
        found = list(conn.execute(sql.owners, {"ids": list(firsts)}))
        held = {row.id for row in found if row.deleted_at is None}
        missing = [cid for cid in firsts if cid not in held]
        if missing:
            claim(missing)
            found += conn.execute(sql.owners, {"ids": missing}).all()
    else:
        claim(list(firsts))
        found = list(conn.execute(sql.owners, {"ids": list(firsts)}))
    owners: dict[str, str] = {}
    deleted: dict[str, datetime] = {}
    tips: dict[str, _Tip | None] = {}  # the end of each active branch
    for row in found:
        if row.deleted_at is None:
            owners[row.id] = row.user_id
            tips[row.id] = (
                None if row.active_message_id is None else (row.active_message_id, row.tip_at)
            )
            changes.base(
                row.id,
                row.revision,
                row.created_at,
                row.user_id,
                row.system_prompt,
                row.active_message_id,
            )
        else:
            deleted[row.id] = row.deleted_at
            changes.drop([row.id])

    def stale(event: ChatEvent) -> bool:
        deleted_at = deleted.get(event.conversation_id)
        return deleted_at is not None and event.created_at <= deleted_at

    # 2. The messages, unless held (user) or already final (assistant).
    allowed = [
        event
        for event in events
        if owners.get(event.conversation_id) == event.user_id and not stale(event)
    ]
    users: list[dict[str, Any]] = []
    replies: list[dict[str, Any]] = []
    followed: list[dict[str, Any]] = []  # replies the user messages sent meanwhile follow
    # Stored messages a late message comes before -> its id (their new parent).
    reparents: dict[tuple[str, str], str] = {}
    moved: dict[str, str] = {}  # the new ends of active branches
    pending: dict[tuple[str, str], dict[str, Any]] = {}  # this round's rows
    for event in allowed:
        conversation_id, tip = event.conversation_id, tips.get(event.conversation_id)
        message = _message_row(event)
        key = (conversation_id, event.message_id)
        if isinstance(event, UserMessageAccepted):
            if event.parent_id is not None or event.root:
                message["parent_id"] = event.parent_id
            elif tip is None or tip[1] <= event.created_at:
                message["parent_id"] = None if tip is None else tip[0]
            else:
                # Stored late (a redelivery after later ones): in the active branch at
                # its time, before the messages sent after it.
                parent, child = _place_late(
                    conn, sql, pending, reparents, conversation_id, tip[0], event
                )
                message["parent_id"] = parent
                pending[key] = message
                if child is not None:
                    later = pending.get((conversation_id, child))
                    if later is not None:
                        later["parent_id"] = event.message_id
                    else:
                        # The next late message of this round finds it moved.
                        reparents[(conversation_id, child)] = event.message_id
                users.append(message)
                continue
            users.append(message)
            pending[key] = message
            tips[conversation_id] = (event.message_id, event.created_at)
            moved[conversation_id] = event.message_id
            continue
        message["parent_id"] = event.reply_to
        pending[key] = message
        replies.append(message)
        if tip is None or tip[0] == event.reply_to or event.regenerated:
            tips[conversation_id] = (event.message_id, event.created_at)
            moved[conversation_id] = event.message_id
        if not event.regenerated:
            followed.append(
                {
                    "in_conversation": conversation_id,
                    "question_id": event.reply_to,
                    "reply_id": event.message_id,
                }
            )
    reparented = [
        {"in_conversation": conversation_id, "child": child, "parent": parent}
        for (conversation_id, child), parent in reparents.items()
    ]
    written: set[tuple[str, str]] = set()
    if users:
        inserted = conn.execute(sql.insert_users, users).all()
        written.update((row.conversation_id, row.id) for row in inserted)
        changes.rows([u for u in users if (u["conversation_id"], u["id"]) in written])
        # Their images are read with the message (their store is another table).
        changes.drop({row.conversation_id for row in inserted if row.has_images})
    if replies:
        rows = conn.execute(sql.upsert_assistants, replies)
        keys = {(row.conversation_id, row.id) for row in rows}
        written |= keys
        changes.rows([r for r in replies if (r["conversation_id"], r["id"]) in keys])
    if followed:
        conn.execute(sql.follow_reply, followed)
        changes.follow(followed)
    if reparented:
        conn.execute(sql.reparent, reparented)
        changes.reparent(reparented)

    # 3. Move each touched conversation's activity forward (once per conversation).
    touches: dict[str, _Touch] = {}
    outcomes: list[StoreOutcome] = []
    for event in events:
        if stale(event):
            outcomes.append(StoreOutcome.DELETED)
            continue
        if owners.get(event.conversation_id) != event.user_id:
            log.warning(
                "%s %s ignored: conversation %s belongs to another user",
                event.kind,
                event.message_id,
                event.conversation_id,
            )
            outcomes.append(StoreOutcome.FORBIDDEN)
            continue
        if (event.conversation_id, event.message_id) not in written:
            outcomes.append(StoreOutcome.DUPLICATE)
            continue
        outcomes.append(StoreOutcome.STORED)
        touch = touches.get(event.conversation_id)
        if isinstance(event, UserMessageAccepted):
            # The first title only is used: derived only while none is.
            at, prompt = event.created_at, _prompt(event)
            title = _title(event) if touch is None or touch.title is None else None
        else:
            at, title, prompt = event.finished_at, None, None
        if touch is None:
            touches[event.conversation_id] = _Touch(at, title, prompt)
        else:
            touch.add(at, title, prompt)
    if touches:
        touched = [
            {
                "conversation_id": conversation_id,
                "at": touch.at,
                "title": touch.title,
                "system_prompt": touch.system_prompt,
                "active": moved.get(conversation_id),
            }
            for conversation_id, touch in touches.items()
        ]
        conn.execute(sql.touch, touched)
        changes.touch(touched)
        if sql.prune is not None:
            # 4. Beyond LIVECHAT_HISTORY_MAX, the oldest messages go, in the same
            #    transaction. A redelivered old event stored again is the oldest, and
            #    goes again: the outcome is the same however often it comes.
            conn.execute(sql.prune, [{"conversation_id": cid} for cid in touches])
            changes.drop(touches)
    # Parents moved by events that stored nothing (a repeated reply): the revision
    # moves all the same, so that no cache keeps the tree as it was.
    untouched = {row["in_conversation"] for row in [*followed, *reparented]} - touches.keys()
    if untouched:
        conn.execute(sql.bump, [{"conversation_id": cid} for cid in sorted(untouched)])
        changes.bump(untouched)
    return outcomes


_Tip = tuple[str, datetime]  # a message id and its time


def _place_late(
    conn: Connection,
    sql: Statements,
    pending: dict[tuple[str, str], dict[str, Any]],
    reparents: Mapping[tuple[str, str], str],
    conversation_id: str,
    tip: str,
    event: UserMessageAccepted,
) -> tuple[str | None, str | None]:
    """Where a user message older than the end of the active branch goes: after the
    newest message of the branch sent before it, and before the one after that."""

    def lookup(message_id: str) -> tuple[str | None, datetime] | None:
        held = pending.get((conversation_id, message_id))
        if held is not None:
            return held["parent_id"], held["created_at"]
        found = conn.execute(sql.placed, {"conversation_id": conversation_id, "id": message_id})
        stored = found.first()
        if stored is None:
            return None
        # Moved under an earlier late message of this round: not written yet.
        parent = reparents.get((conversation_id, message_id), stored.parent_id)
        return parent, stored.created_at

    if lookup(event.message_id) is not None:
        return None, None  # held already: a repeat, nothing moves
    child: str | None = None
    current: str | None = tip
    seen: set[str] = set()
    while current is not None and current not in seen:
        seen.add(current)
        placed = lookup(current)
        if placed is None:
            break
        parent, at = placed
        if at <= event.created_at:
            return current, child
        child, current = current, parent
    return None, child


def _conversation_row(event: ChatEvent, fresh_at: datetime) -> dict[str, Any]:
    # Normally a user message creates it; a reply first covers a reordered redelivery.
    return {
        "id": event.conversation_id,
        "user_id": event.user_id,
        "title": _title(event) if isinstance(event, UserMessageAccepted) else "",
        "system_prompt": _prompt(event) if isinstance(event, UserMessageAccepted) else None,
        "created_at": event.created_at,
        "updated_at": event.created_at,
        "fresh_at": fresh_at,
    }


def _message_row(event: ChatEvent) -> dict[str, Any]:
    row: dict[str, Any] = {
        "conversation_id": event.conversation_id,
        "id": event.message_id,
        "content": _text(event.content),
        "created_at": event.created_at,
    }
    if isinstance(event, UserMessageAccepted):
        row.update(role="user", status="complete", user_id=event.author_id or event.user_id)
        return row
    row.update(
        role="assistant", model=event.model, provider=event.provider, reply_to=event.reply_to
    )
    # The same keys either way: one compiled form of the statement.
    if isinstance(event, GenerationFinished):
        row.update(
            status=event.status,
            prompt_tokens=event.usage.prompt_tokens,
            completion_tokens=event.usage.completion_tokens,
            total_tokens=event.usage.total_tokens,
            finish_reason=event.finish_reason,
            error_code=None,
            error_message=None,
            error_retryable=None,
        )
    else:
        assert isinstance(event, GenerationFailed)
        row.update(
            status="failed",
            prompt_tokens=None,
            completion_tokens=None,
            total_tokens=None,
            finish_reason=None,
            error_code=event.code,
            error_message=_text(event.message),
            error_retryable=event.retryable,
        )
    return row


def _title(event: UserMessageAccepted) -> str:
    return derive_title(_text(event.content))


def _prompt(event: UserMessageAccepted) -> str | None:
    return None if event.system_prompt is None else _text(event.system_prompt)


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; drop it everywhere so both backends agree.
    return value.replace("\x00", "")
