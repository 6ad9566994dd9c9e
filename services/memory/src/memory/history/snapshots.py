"""Each conversation's messages in this process: the context of a reply without the history query.

The context of a reply (the path up the message tree from the user message's parent)
is read for every generation, and between two generations of a conversation memory
itself stores its user message and reply. A snapshot is a conversation's row and all
its messages, labelled with the conversation's revision (a column every change moves
up in its own transaction: a chat event stored, an update, a branch change; a deleted
conversation has no row, one created again after its deletion another `created_at`).

- A context read first reads the conversation's (revision, created_at): one key
  lookup. When the snapshot carries the same, it is what SQL holds, and the context
  is computed from it exactly as the history query computes it (`context_from`).
  Otherwise the conversation is read whole (read before, the label is never newer
  than the contents) and kept, unless it is larger than the bounds.
- A transaction of chat events records what it changed (`WriteLog`: the revision it
  found, the rows it wrote, the parents it moved, the touch of the conversation);
  after its commit the changes are applied to a snapshot labelled with the revision
  the transaction found, which then carries the revision the transaction left. A
  snapshot labelled otherwise (another replica wrote since, or this one wrote without
  it) is dropped: the next read reloads it.

So another replica's writes, or writes this one does not log, are never missed: they
move the revision, and a mismatch reads SQL. Bounded by conversations, messages per
conversation and characters in all (the least recently used go first).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts.attachments import AttachmentRef
from contracts.events import ContextMessage
from contracts.rpc import ContextReply, ContextRequest
from memory.history.rows import stored_message
from memory.history.statements import FINAL_STATUSES, REPLACEABLE

__all__ = ["Snapshot", "Snapshots", "WriteLog", "context_from"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Snapshot:
    """A conversation as SQL held it at `revision`: its row and every message."""

    revision: int
    created_at: datetime
    user_id: str
    system_prompt: str | None
    active_message_id: str | None
    # id -> the message's columns (those of the messages table).
    messages: dict[str, dict[str, Any]]
    # The images of its user messages that have some.
    images: dict[str, tuple[AttachmentRef, ...]] = field(default_factory=dict)
    chars: int = 0
    # Its characters as `Snapshots` counted them when it was kept: writes applied in
    # place grow `chars`, and the total is settled when it is kept again.
    counted: int = 0

    def put(self, row: Mapping[str, Any]) -> None:
        """A message written (inserted, or an assistant message's repeat that replaced a
        non-final one: its place in the tree stays)."""
        held = self.messages.get(row["id"])
        if held is None:
            self.messages[row["id"]] = dict(row)
            self.chars += len(row["content"])
            return
        self.chars += len(row["content"]) - len(held["content"])
        for column in REPLACEABLE:
            if column in row:
                held[column] = row[column]


class Snapshots:
    """The snapshots of the conversations read or written last, within bounds."""

    def __init__(self, *, conversations: int, messages: int, chars: int) -> None:
        self._most = conversations
        self.max_messages = messages
        self._max_chars = chars
        self._chars = 0
        self._held: OrderedDict[str, Snapshot] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def get(self, conversation_id: str, revision: int, created_at: datetime) -> Snapshot | None:
        """The snapshot, when it carries this revision of the conversation."""
        snapshot = self._held.get(conversation_id)
        if snapshot is None:
            return None
        if snapshot.revision != revision or snapshot.created_at != created_at:
            self.forget(conversation_id)
            return None
        self._held.move_to_end(conversation_id)
        return snapshot

    def keep(self, conversation_id: str, snapshot: Snapshot) -> None:
        self.forget(conversation_id)
        if len(snapshot.messages) > self.max_messages or snapshot.chars > self._max_chars:
            return
        self._held[conversation_id] = snapshot
        snapshot.counted = snapshot.chars
        self._chars += snapshot.counted
        self._trim()

    def forget(self, conversation_id: str) -> None:
        snapshot = self._held.pop(conversation_id, None)
        if snapshot is not None:
            self._chars -= snapshot.counted

    def forget_all(self, conversation_ids: Iterable[str]) -> None:
        for conversation_id in conversation_ids:
            self.forget(conversation_id)

    def _trim(self) -> None:
        while self._held and (len(self._held) > self._most or self._chars > self._max_chars):
            _, oldest = self._held.popitem(last=False)
            self._chars -= oldest.counted

    def apply(self, log: WriteLog) -> None:
        """The changes of a committed transaction (in the order it made them)."""
        try:
            self._apply(log)
        except Exception:  # the write committed: it must not fail now
            logger.exception("applying a write to the snapshots failed; all forgotten")
            self._held.clear()
            self._chars = 0

    def _apply(self, log: WriteLog) -> None:
        live: dict[str, Snapshot] = {}
        for op, *args in log.ops:
            if op == "base":
                conversation_id, revision, created_at, user_id, system_prompt, active = args
                snapshot = live.get(conversation_id) or self._held.get(conversation_id)
                if snapshot is not None and (
                    snapshot.revision == revision and snapshot.created_at == created_at
                ):
                    live[conversation_id] = snapshot
                elif active is None:
                    # No message yet (the first one stored moves the active branch's end).
                    live[conversation_id] = Snapshot(
                        revision, created_at, user_id, system_prompt, None, {}
                    )
                else:
                    live.pop(conversation_id, None)
                    self.forget(conversation_id)
            elif op == "drop":
                for conversation_id in args[0]:
                    live.pop(conversation_id, None)
                    self.forget(conversation_id)
            elif op == "rows":
                for row in args[0]:
                    if (snapshot := live.get(row["conversation_id"])) is not None:
                        snapshot.put(row)
            elif op == "follow":
                # The user messages under the question now follow its reply.
                for row in args[0]:
                    if (snapshot := live.get(row["in_conversation"])) is not None:
                        for message in snapshot.messages.values():
                            if message["parent_id"] == row["question_id"] and (
                                message["role"] == "user"
                            ):
                                message["parent_id"] = row["reply_id"]
            elif op == "reparent":
                # Late messages moved into place (rare): read again. Applied to a
                # snapshot whose read already saw this write, a `follow` after it could
                # move a child twice.
                for row in args[0]:
                    live.pop(row["in_conversation"], None)
                    self.forget(row["in_conversation"])
            elif op == "touch":
                for row in args[0]:
                    if (snapshot := live.get(row["conversation_id"])) is not None:
                        snapshot.revision += 1
                        if row["system_prompt"] is not None:
                            snapshot.system_prompt = row["system_prompt"]
                        if row["active"] is not None:
                            snapshot.active_message_id = row["active"]
            elif op == "bump":
                for conversation_id in args[0]:
                    if (snapshot := live.get(conversation_id)) is not None:
                        snapshot.revision += 1
        for conversation_id, snapshot in live.items():
            self.keep(conversation_id, snapshot)


@dataclass
class WriteLog:
    """What a transaction of chat events changed, in order (`memory.history.writes`)."""

    ops: list[tuple[Any, ...]] = field(default_factory=list)

    def base(
        self,
        conversation_id: str,
        revision: int,
        created_at: datetime,
        user_id: str,
        system_prompt: str | None,
        active: str | None,
    ) -> None:
        """The conversation as the transaction found it (before this round's changes)."""
        self.ops.append(
            ("base", conversation_id, revision, created_at, user_id, system_prompt, active)
        )

    def drop(self, conversation_ids: Iterable[str]) -> None:
        """Changed in a way not logged: read again."""
        self.ops.append(("drop", list(conversation_ids)))

    def rows(self, rows: list[dict[str, Any]]) -> None:
        """Messages written (only those the database wrote)."""
        self.ops.append(("rows", rows))

    def follow(self, rows: list[dict[str, Any]]) -> None:
        self.ops.append(("follow", rows))

    def reparent(self, rows: list[dict[str, Any]]) -> None:
        self.ops.append(("reparent", rows))

    def touch(self, rows: list[dict[str, Any]]) -> None:
        self.ops.append(("touch", rows))

    def bump(self, conversation_ids: Iterable[str]) -> None:
        self.ops.append(("bump", list(conversation_ids)))


def context_from(snapshot: Snapshot, request: ContextRequest, limit: int) -> ContextReply:
    """The context as `memory.history.statements` computes it in SQL, from a snapshot
    carrying the conversation's current revision (so it holds what SQL holds)."""
    messages = snapshot.messages
    reply = messages.get(request.reply_id)
    existing = None
    if reply is not None and reply["role"] == "assistant" and reply["status"] in FINAL_STATUSES:
        existing = stored_message(reply)
    history: list[ContextMessage] = []
    if limit > 0:
        question = messages.get(request.user_message_id)
        if question is not None:
            current = question["parent_id"]
        elif request.root:
            current = None
        else:
            current = request.parent_id or snapshot.active_message_id
        # The way up: the start and `walk` more at most, the newest `limit` kept.
        walk = limit * 4 + 8
        depth = 0
        kept: list[dict[str, Any]] = []
        while current is not None and depth <= walk and len(kept) < limit:
            message = messages.get(current)
            if message is None:
                break
            if not (
                message["id"] in (request.user_message_id, request.reply_id)
                or (
                    message["role"] == "assistant"
                    and (message["status"] == "failed" or message["content"] == "")
                )
            ):
                kept.append(message)
            current = message["parent_id"]
            depth += 1
        images = snapshot.images
        history = [
            ContextMessage(
                role=m["role"],
                content=m["content"],
                id=m["id"],
                attachments=images.get(m["id"], ()) if m["role"] == "user" else (),
            )
            for m in reversed(kept)
        ]
    return ContextReply(
        system_prompt=snapshot.system_prompt, messages=tuple(history), existing_reply=existing
    )
