"""The SQL of the hot paths, built once with bound parameters.

Building a SQLAlchemy statement (an alias's columns, coercions, a cache key) costs
more CPU than SQLite takes to run it; these are built once per repository and run
with a dict of values, so each execution is a compiled-cache hit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Executable,
    Integer,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal_column,
    not_,
    null,
    or_,
    select,
    true,
    type_coerce,
    union_all,
    update,
)

from memory.history.tables import Conversation, DeletedConversation, Message
from runtime.sql import UtcDateTime

__all__ = ["FINAL_STATUSES", "REPLACEABLE", "REPLY_PREFIX", "Statements"]

FINAL_STATUSES = ("complete", "cancelled", "interrupted", "failed")


# The columns of an already final reply in a context row carry this prefix.
REPLY_PREFIX = "reply_"

_conversations: Table = Conversation.__table__  # type: ignore[assignment]
_messages: Table = Message.__table__  # type: ignore[assignment]
_deleted: Table = DeletedConversation.__table__  # type: ignore[assignment]
_MESSAGE_KEY = ["conversation_id", "id"]
# An assistant message may replace a stored one only while that one is not final.
REPLACEABLE = (
    "content",
    "status",
    "created_at",
    "model",
    "provider",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reply_to",
    "finish_reason",
    "error_code",
    "error_message",
    "error_retryable",
)


class Statements:
    """Parameters are named after the columns; see each attribute for the extra ones."""

    def __init__(self, insert: Any, *, history_max: int = 0, read_first: bool = False) -> None:
        """`read_first`: the writes read the conversations before claiming the missing
        ones (PostgreSQL; on SQLite the claim, a write, takes the write lock first)."""
        c, m, d = _conversations.c, _messages.c, _deleted.c
        self.read_first = read_first
        # conversation_id -> its messages beyond the newest `history_max` deleted
        # (LIVECHAT_HISTORY_MAX); None when every message is kept.
        self.prune: Executable | None = None
        if history_max > 0:
            pruned: Any = bindparam("conversation_id", type_=String())
            newest = (
                select(m.id)
                .where(m.conversation_id == pruned)
                .order_by(m.created_at.desc(), m.id.desc())
                .limit(history_max)
            )
            self.prune = delete(_messages).where(
                m.conversation_id == pruned, m.id.not_in(newest.scalar_subquery())
            )
        # conversations rows + fresh_at -> each created unless it exists, or unless it was
        # deleted at or after `fresh_at` (its newest event here: a stale redelivery).
        claimed = ["id", "user_id", "title", "system_prompt", "created_at", "updated_at"]
        conversation_id: Any = bindparam("id", type_=String())
        rows = select(
            conversation_id,
            bindparam("user_id", type_=Text()),
            bindparam("title", type_=Text()),
            bindparam("system_prompt", type_=Text()),
            bindparam("created_at", type_=UtcDateTime()),
            bindparam("updated_at", type_=UtcDateTime()),
            literal_column("1"),
        ).where(
            ~exists().where(
                d.id == conversation_id,
                d.deleted_at >= bindparam("fresh_at", type_=UtcDateTime()),
            )
        )
        self.claim: Executable = (
            insert(_conversations)
            .from_select([*claimed, "revision"], rows)
            .on_conflict_do_nothing(index_elements=["id"])
        )
        ids: Any = bindparam("ids", expanding=True)
        # ids (a list) -> (id, user_id, NULL, active_message_id, its created_at, revision,
        # created_at, system_prompt) of those that exist and (id, NULL, deleted_at, NULL...)
        # of those deleted.
        tip_at = (
            select(m.created_at)
            .where(m.conversation_id == c.id, m.id == c.active_message_id)
            .scalar_subquery()
        )
        self.owners: Executable = union_all(
            select(
                c.id,
                c.user_id,
                type_coerce(null(), UtcDateTime()).label("deleted_at"),
                c.active_message_id,
                type_coerce(tip_at, UtcDateTime()).label("tip_at"),
                c.revision,
                c.created_at,
                c.system_prompt,
            ).where(c.id.in_(ids)),
            select(
                d.id,
                type_coerce(null(), Text()).label("user_id"),
                d.deleted_at,
                type_coerce(null(), String()).label("active_message_id"),
                type_coerce(null(), UtcDateTime()).label("tip_at"),
                type_coerce(null(), Integer()).label("revision"),
                type_coerce(null(), UtcDateTime()).label("created_at"),
                type_coerce(null(), Text()).label("system_prompt"),
            ).where(d.id.in_(ids)),
        )
        # conversation_id, id -> the message's parent and time (a late message's place).
        self.placed: Executable = select(m.parent_id, m.created_at).where(
            m.conversation_id == bindparam("conversation_id"), m.id == bindparam("id")
        )
        # in_conversation, child, parent -> the message `child` follows `parent`.
        self.reparent: Executable = (
            update(_messages)
            .where(m.conversation_id == bindparam("in_conversation"), m.id == bindparam("child"))
            .values(parent_id=bindparam("parent"))
        )
        written = (m.conversation_id, m.id)
        # (Text: the expression language does not correlate a subquery of RETURNING.)
        images: Any = literal_column(
            "EXISTS (SELECT 1 FROM attachments WHERE attachments.conversation_id = "
            "messages.conversation_id AND attachments.message_id = messages.id)"
        )
        # messages rows -> the keys of the user messages inserted (not already held), and
        # whether they have images.
        self.insert_users: Executable = (
            insert(_messages)
            .on_conflict_do_nothing(index_elements=_MESSAGE_KEY)
            .returning(*written, images.label("has_images"))
        )
        upsert = insert(_messages)
        # messages rows -> the keys of the assistant messages written (none replaces a
        # final one).
        self.upsert_assistants: Executable = upsert.on_conflict_do_update(
            index_elements=_MESSAGE_KEY,
            set_={column: upsert.excluded[column] for column in REPLACEABLE},
            # Constants in the SQL text: an executemany takes no list parameter.
            where=m.status.not_in([literal_column(f"'{status}'") for status in FINAL_STATUSES]),
        ).returning(*written)
        # in_conversation, question_id (a user message), reply_id -> the user messages that
        # follow the user message (sent while its reply was in flight) follow the reply.
        self.follow_reply: Executable = (
            update(_messages)
            .where(
                m.conversation_id == bindparam("in_conversation"),
                m.parent_id == bindparam("question_id"),
                m.role == "user",
            )
            .values(parent_id=bindparam("reply_id"))
        )
        # conversation_id (rows) -> the revision moved up (parents moved by a repeated
        # event that stored nothing: the change is seen by every cache).
        self.bump: Executable = (
            update(_conversations)
            .where(c.id == bindparam("conversation_id"))
            .values(revision=c.revision + 1)
        )
        at = bindparam("at", type_=UtcDateTime())
        title: Any = bindparam("title", type_=String())
        # conversation_id, at, title, system_prompt, active (rows) -> updated_at
        # moved forward to `at` (never back); an empty title filled with `title` unless
        # NULL; the system prompt and the active branch's end replaced unless NULL.
        self.touch: Executable = (
            update(_conversations)
            .where(c.id == bindparam("conversation_id"))
            .values(
                revision=c.revision + 1,
                updated_at=case((c.updated_at < at, at), else_=c.updated_at),
                title=case((c.title == "", func.coalesce(title, c.title)), else_=c.title),
                system_prompt=func.coalesce(
                    bindparam("system_prompt", type_=Text()), c.system_prompt
                ),
                active_message_id=func.coalesce(
                    bindparam("active", type_=String()), c.active_message_id
                ),
            )
        )
        # conversation_id -> the conversation's revision and what a snapshot keeps of it.
        # `deleted`: it was deleted before and is back (the deletion's marker is kept):
        # its revision started again, so an older snapshot's label could match.
        self.version: Executable = select(
            c.revision,
            c.created_at,
            c.user_id,
            c.system_prompt,
            c.active_message_id,
            exists().where(_deleted.c.id == c.id).label("deleted"),
        ).where(c.id == bindparam("conversation_id", type_=String()))
        # conversation_id, limit -> its messages (`limit` at most, in no order).
        self.all_messages: Executable = (
            select(_messages)
            .where(m.conversation_id == bindparam("conversation_id", type_=String()))
            .limit(bindparam("limit", type_=Integer()))
        )
        self.context: Executable = _context()
        self.context_without_history: Executable = _context(with_history=False)


def _context(*, with_history: bool = True) -> Executable:
    """conversation_id, user_id, reply_id, user_message_id, parent_id, root, limit, walk ->
    one row per message of the history (oldest first; one row with NULLs if none), each
    with the conversation's system prompt and the reply's columns if it is already final;
    no row when the conversation is unknown or another user's."""
    c = _conversations.c
    reply = _messages.alias("reply")
    r = reply.c
    source = _conversations.outerjoin(
        reply,
        and_(
            r.conversation_id == c.id,
            r.id == bindparam("reply_id"),
            r.role == "assistant",
            r.status.in_(FINAL_STATUSES),
        ),
    )
    columns: list[Any] = [c.system_prompt, *(col.label(REPLY_PREFIX + col.key) for col in r)]
    order: list[Any] = []
    if with_history:
        history = _history()
        source = source.outerjoin(history, true())
        columns += [history.c.id.label("message_id"), history.c.role, history.c.content]
        order = [history.c.depth.desc()]
    return (
        select(*columns)
        .select_from(source)
        .where(c.id == bindparam("conversation_id"), c.user_id == bindparam("user_id"))
        .order_by(*order)
    )


def _history() -> Any:
    """The newest `limit` messages of the path from the first message to the user
    message's parent: the context of its reply (nothing from other branches)."""
    m = _messages.c
    conversation_id: Any = bindparam("conversation_id")
    user_message_id: Any = bindparam("user_message_id")
    # The parent: the stored user message's; when memory does not hold it yet (it lags
    # the worker), the one the request names, else none (`root`), else the end of the
    # active branch (where memory will put it).
    question = _messages.alias("question")
    q = question.c
    held = (
        select(q.parent_id)
        .where(q.conversation_id == conversation_id, q.id == user_message_id)
        .scalar_subquery()
    )
    tip = (
        select(_conversations.c.active_message_id)
        .where(_conversations.c.id == conversation_id)
        .scalar_subquery()
    )
    is_held = exists().where(q.conversation_id == conversation_id, q.id == user_message_id)
    start = case(
        (is_held, held),
        (bindparam("root", type_=Boolean()), null()),
        else_=func.coalesce(bindparam("parent_id", type_=String()), tip),
    )
    first = select(*_path_columns(m), literal_column("0").label("depth")).where(
        m.conversation_id == conversation_id, m.id == start
    )
    path = first.cte("path", recursive=True)
    up = _messages.alias("up")
    u = up.c
    # `walk` bounds the way up: the context is the newest messages of the path, so a
    # long conversation is not read to its first message.
    path = path.union_all(
        select(*_path_columns(u), (path.c.depth + 1).label("depth")).where(
            u.conversation_id == conversation_id,
            u.id == path.c.parent_id,
            path.c.depth < bindparam("walk", type_=Integer()),
        )
    )
    p = path.c
    return (
        select(p.id, p.role, p.content, p.depth)
        .where(
            p.id != user_message_id,
            p.id != bindparam("reply_id"),
            not_(and_(p.role == "assistant", or_(p.status == "failed", p.content == ""))),
        )
        .order_by(p.depth)
        .limit(bindparam("limit", type_=Integer()))
        .subquery("history")
    )


def _path_columns(columns: Any) -> list[Any]:
    return [columns.id, columns.parent_id, columns.role, columns.content, columns.status]
