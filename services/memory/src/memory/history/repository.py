"""Conversation history in SQL: idempotent writes of the chat events, and the reads."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Integer,
    Row,
    Select,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from contracts.events import (
    ChatEvent,
    ContextMessage,
    GenerationFailed,
    GenerationFinished,
    UserMessageAccepted,
)
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationCreateRequest,
    ConversationDeleteReply,
    ConversationDeleteRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ConversationListReply,
    ConversationListRequest,
    ConversationSummary,
    ConversationUpdateRequest,
    ConversationWriteReply,
    Member,
    MembersReply,
    MembersRequest,
    ReadMarkReply,
    ReadMarkRequest,
    StoredMessage,
)
from memory.attachments.store import read_refs
from memory.history.branches import branch_end, children_of, with_siblings
from memory.history.database import sqlite_reader
from memory.history.pages import newest_within_bytes
from memory.history.read_state import mark_read, read_by, unread_count
from memory.history.rows import stored_message
from memory.history.search import ExchangeSearch, query_terms
from memory.history.snapshots import Snapshot, Snapshots, WriteLog, context_from
from memory.history.statements import (
    FINAL_STATUSES,
    REPLY_PREFIX,
    Statements,
)
from memory.history.store import CachedWindow, Exchange, StoreOutcome
from memory.history.tables import (
    Conversation,
    ConversationMember,
    DeletedConversation,
    Message,
    ReadState,
)
from memory.history.writes import write_events
from runtime.sql import dialect_insert

__all__ = ["FINAL_STATUSES", "SqlConversationRepository"]

log = logging.getLogger(__name__)

_conversations: Table = Conversation.__table__  # type: ignore[assignment]
_messages: Table = Message.__table__  # type: ignore[assignment]
_deleted: Table = DeletedConversation.__table__  # type: ignore[assignment]
_read_state: Table = ReadState.__table__  # type: ignore[assignment]
_members: Table = ConversationMember.__table__  # type: ignore[assignment]
T = TypeVar("T")

# Conversations of more messages, or more characters, are not kept in a snapshot (their
# context is read with the history query); the characters of all snapshots at most.
SNAPSHOT_MESSAGES = 400
SNAPSHOT_CHARS = 64_000_000
# Ids of conversations found too large for a snapshot, remembered at most.
_LARGE_REMEMBERED = 10_000


class SqlConversationRepository:
    """Implements `memory.history.store.ConversationStore`.

    On a SQLite file, the hot reads (context, personal memory, a conversation's page) run
    on a blocking engine on the event loop's thread, and the writes of the chat events on
    it in one worker thread hop per batch (`memory.history.database.sqlite_reader`);
    `close` releases it.
    """

    def __init__(
        self, engine: AsyncEngine, *, history_max: int = 0, context_cache: int = 1000
    ) -> None:
        """`history_max`: messages kept per conversation, the oldest pruned (0: all).
        `context_cache`: conversations whose snapshot this process keeps for the context
        reads (`memory.history.snapshots`; 0: none)."""
        self._engine = engine
        self._insert = dialect_insert(engine)
        self._sql = Statements(
            self._insert,
            history_max=history_max,
            read_first=engine.dialect.name == "postgresql",
        )
        self._search = ExchangeSearch(engine.dialect.name)
        self._reader = sqlite_reader(engine)
        self._snapshots = (
            Snapshots(conversations=context_cache, messages=SNAPSHOT_MESSAGES, chars=SNAPSHOT_CHARS)
            if context_cache > 0
            else None
        )
        self._large: set[str] = set()  # conversations too large for a snapshot

    def close(self) -> None:
        """Close the connections of the SQLite reader (the engine stays the caller's)."""
        if self._reader is not None:
            self._reader.dispose()

    async def _rows(
        self, query: Executable, params: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """The rows of one read statement (on the SQLite reader: inline, see `_read`)."""
        if self._reader is not None:
            return _read_rows(self._reader, query, params)
        async with self._engine.connect() as conn:
            return (await conn.execute(query, params)).all()

    async def _read(self, read: Callable[[Connection], T]) -> T:
        """`read` run on one connection.

        On the SQLite reader: inline, on the event loop's thread. Under WAL a read never
        waits for a writer (it reads the last commit), and a hot read takes a fraction
        of a millisecond: less than the thread hop it saved (a wake-up of a worker
        thread and of the loop, and the GIL handed back and forth, per request)."""
        if self._reader is not None:
            return _read_with(self._reader, read)
        async with self._engine.connect() as conn:
            return await conn.run_sync(read)

    # --- chat events ----------------------------------------------------------------

    async def store_user_message(self, event: UserMessageAccepted) -> StoreOutcome:
        (outcome,) = await self.store_events([event])
        return outcome

    async def store_assistant_message(
        self, event: GenerationFinished | GenerationFailed
    ) -> StoreOutcome:
        (outcome,) = await self.store_events([event])
        return outcome

    async def store_events(self, events: Sequence[ChatEvent]) -> list[StoreOutcome]:
        # In order, in one transaction: one commit (one log sync) for the whole batch.
        # On a SQLite file, in one thread hop on the blocking engine (aiosqlite makes a
        # hop of each step of each statement).
        log = WriteLog()

        def write(conn: Connection) -> list[StoreOutcome]:
            return write_events(conn, self._sql, events, log)

        if self._reader is not None:
            outcomes = await asyncio.to_thread(_write_with, self._reader, write)
        else:
            async with self._engine.begin() as conn:
                outcomes = await conn.run_sync(write)
        # Committed: the snapshots the batch found up to date follow it.
        if self._snapshots is not None:
            self._snapshots.apply(log)
        return outcomes

    # --- conversation writes (request-reply; committed before the reply) -------------

    async def create_conversation(
        self, request: ConversationCreateRequest, now: datetime
    ) -> ConversationWriteReply:
        c = _conversations.c
        row = {
            "id": request.conversation_id,
            "user_id": request.user_id,
            "title": _text(request.title or ""),
            "system_prompt": _prompt(request.system_prompt),
            "created_at": now,
            "updated_at": now,
            "revision": 1,
        }
        insert = (
            self._insert(_conversations)
            .values(row)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(c.id)
        )
        async with self._engine.begin() as conn:
            created = (await conn.execute(insert)).first() is not None
            summary = await conn.run_sync(_summary, request.conversation_id, request.user_id)
        return ConversationWriteReply(conversation=summary, created=created and summary is not None)

    async def update_conversation(
        self, request: ConversationUpdateRequest
    ) -> ConversationWriteReply:
        c, m = _conversations.c, _messages.c
        values: dict[str, Any] = {"revision": c.revision + 1}
        if request.title is not None:
            values["title"] = _text(request.title)
        if request.system_prompt is not None:
            values["system_prompt"] = _prompt(request.system_prompt)
        if request.assistant is not None:
            values["assistant_off"] = request.assistant == "off"
        # The owner and members change it; a viewer only reads it.
        mine = and_(c.id == request.conversation_id, _sender(c, request.user_id))
        async with self._engine.begin() as conn:
            if not await conn.scalar(select(exists().where(mine))):
                return ConversationWriteReply(
                    conversation=(
                        summary := await conn.run_sync(
                            _summary, request.conversation_id, request.user_id
                        )
                    ),
                    forbidden=summary is not None,
                )
            through = request.active_message_id
            if through is not None:
                tree = (
                    await conn.execute(
                        select(m.id, m.parent_id)
                        .where(m.conversation_id == request.conversation_id)
                        .order_by(m.created_at, m.id)
                    )
                ).all()
                children = children_of(tree)
                if not any(row.id == through for row in tree):
                    return ConversationWriteReply(
                        conversation=await conn.run_sync(
                            _summary, request.conversation_id, request.user_id
                        ),
                        unknown_message=True,
                    )
                values["active_message_id"] = branch_end(children, through)
            await conn.execute(update(_conversations).where(mine).values(values))
            summary = await conn.run_sync(_summary, request.conversation_id, request.user_id)
        return ConversationWriteReply(conversation=summary)

    async def delete_conversation(
        self, request: ConversationDeleteRequest, now: datetime
    ) -> ConversationDeleteReply:
        c, d = _conversations.c, _deleted.c
        async with self._engine.begin() as conn:
            gone = await self._delete(
                conn, and_(c.id == request.conversation_id, c.user_id == request.user_id), now
            )
            if gone:
                self._forget(gone)
                return ConversationDeleteReply(deleted=True)
            # Deleted before by the same user: a repeated request succeeds again.
            again = await conn.scalar(
                select(
                    exists().where(d.id == request.conversation_id, d.user_id == request.user_id)
                )
            )
        return ConversationDeleteReply(deleted=bool(again))

    async def members(self, request: MembersRequest, now: datetime) -> MembersReply:
        """List, add or remove a conversation's members (see `MembersRequest`)."""
        b = _members.c
        where = and_(b.conversation_id == request.conversation_id, b.user_id == request.member_id)
        async with self._engine.begin() as conn:
            summary = await conn.run_sync(_summary, request.conversation_id, request.user_id)
            if summary is None:
                return MembersReply(conversation=None)
            owner = summary.owner_id
            if request.action == "add":
                if summary.role != "owner":
                    return MembersReply(conversation=summary, forbidden=True)
                if request.member_id is None or request.member_id == owner:
                    return MembersReply(conversation=summary, unknown_member=True)
                changed = await conn.execute(
                    update(_members).where(where).values(role=request.role)
                )
                if not changed.rowcount:
                    row = {
                        "conversation_id": request.conversation_id,
                        "user_id": request.member_id,
                        "role": request.role,
                        "created_at": now,
                    }
                    await conn.execute(self._insert(_members).values(row).on_conflict_do_nothing())
            elif request.action == "remove":
                leaving = request.member_id == request.user_id
                if summary.role != "owner" and not leaving:
                    return MembersReply(conversation=summary, forbidden=True)
                gone = await conn.execute(delete(_members).where(where))
                if not gone.rowcount:
                    return MembersReply(conversation=summary, unknown_member=True)
            rows = await conn.execute(
                select(b.user_id, b.role)
                .where(b.conversation_id == request.conversation_id)
                .order_by(b.created_at, b.user_id)
            )
            members = [Member(user_id=row.user_id, role=row.role) for row in rows]
        first = [Member(user_id=owner, role="owner")] if owner is not None else []
        return MembersReply(conversation=summary, members=(*first, *members))

    async def delete_idle(self, idle_since: datetime, now: datetime, limit: int) -> list[str]:
        """Delete up to `limit` conversations without activity since `idle_since`."""
        c = _conversations.c
        oldest = (
            select(c.id).where(c.updated_at < idle_since).order_by(c.updated_at).limit(limit)
        ).scalar_subquery()
        async with self._engine.begin() as conn:
            # The activity is checked again in the delete: one that just woke up stays.
            gone = await self._delete(conn, and_(c.id.in_(oldest), c.updated_at < idle_since), now)
        self._forget(gone)
        return gone

    def _forget(self, conversation_ids: Sequence[str]) -> None:
        # Deleted: their snapshots could not match again (no row), the memory goes now.
        if self._snapshots is not None:
            self._snapshots.forget_all(conversation_ids)

    async def forget_deletions(self, before: datetime) -> int:
        """Drop the markers of conversations deleted before `before`; how many."""
        d = _deleted.c
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(_deleted).where(d.deleted_at < before))
        return int(result.rowcount or 0)

    async def mark_read(self, request: ReadMarkRequest, now: datetime) -> ReadMarkReply:
        async with self._engine.begin() as conn:
            visible = _visible(_conversations.c, request.user_id)
            return await mark_read(conn, self._insert, request, now, visible)

    async def read_by(self, conversation_id: str) -> dict[str, str]:
        async with self._engine.connect() as conn:
            return await conn.run_sync(read_by, conversation_id)

    async def _delete(self, conn: AsyncConnection, condition: Any, now: datetime) -> list[str]:
        c = _conversations.c
        rows = (
            await conn.execute(delete(_conversations).where(condition).returning(c.id, c.user_id))
        ).all()
        if not rows:
            return []
        ids = [row.id for row in rows]
        # The foreign key cascades too; explicit so that nothing depends on a pragma.
        await conn.execute(delete(_messages).where(_messages.c.conversation_id.in_(ids)))
        await conn.execute(delete(_read_state).where(_read_state.c.conversation_id.in_(ids)))
        await conn.execute(delete(_members).where(_members.c.conversation_id.in_(ids)))
        tombstone = self._insert(_deleted)
        await conn.execute(
            tombstone.on_conflict_do_update(
                index_elements=["id"],
                set_={"user_id": tombstone.excluded.user_id, "deleted_at": now},
            ),
            [{"id": row.id, "user_id": row.user_id, "deleted_at": now} for row in rows],
        )
        return ids

    # --- reads ----------------------------------------------------------------------

    async def context(self, request: ContextRequest, max_messages: int) -> ContextReply:
        limit = min(request.limit, max_messages)
        if self._snapshots is not None and request.conversation_id not in self._large:
            # The conversation's revision, and the context from its snapshot.
            found = await self._read(lambda conn: self._snapshot_context(conn, request, limit))
            if found is not None:
                return found
        # One statement (one round trip, one driver hop): the conversation, the reply
        # if already final, and the history joined to it row by row.
        params: dict[str, Any] = {
            "conversation_id": request.conversation_id,
            "user_id": request.user_id,
            "reply_id": request.reply_id,
        }
        if limit > 0:
            query = self._sql.context
            params |= {
                "user_message_id": request.user_message_id,
                "parent_id": request.parent_id,
                "root": request.root,
                "limit": limit,
                # Failed and empty replies on the path are skipped: room for some.
                "walk": limit * 4 + 8,
            }
        else:
            query = self._sql.context_without_history
        conversation_id = request.conversation_id

        def read(conn: Connection) -> tuple[Sequence[Row[Any]], dict[str, Any]]:
            rows = conn.execute(query, params).all()
            # The images of the history's user messages, on the same connection (the
            # worker reads their bytes): a follow-up question still shows the picture.
            asked = [r.message_id for r in rows if limit > 0 and r.role == "user"]
            return rows, read_refs(conn, conversation_id, asked)

        rows, images = await self._read(read)
        if not rows:  # unknown, or another user's conversation
            return ContextReply()
        first = rows[0]._mapping
        return ContextReply(
            system_prompt=first["system_prompt"],
            messages=tuple(
                ContextMessage(
                    role=row.role,
                    content=row.content,
                    id=row.message_id,
                    attachments=images.get(row.message_id, ()),
                )
                for row in rows
                if limit > 0 and row.role is not None
            ),
            existing_reply=(
                stored_message(first, REPLY_PREFIX)
                if first[REPLY_PREFIX + "id"] is not None
                else None
            ),
        )

    def _snapshot_context(
        self, conn: Connection, request: ContextRequest, limit: int
    ) -> ContextReply | None:
        """The context from the conversation's snapshot at its current revision (read
        first when missing or older); None when the conversation is too large for one, or
        is back after a deletion (the history query answers those)."""
        assert self._snapshots is not None
        conversation_id = request.conversation_id
        params = {"conversation_id": conversation_id}
        version = conn.execute(self._sql.version, params).first()
        if version is None or version.user_id != request.user_id:
            return ContextReply()  # unknown, or another user's conversation
        if version.deleted:
            # Back after a deletion: another replica may hold a snapshot of the deleted
            # conversation whose label the new revisions reach. The history query.
            self._snapshots.forget(conversation_id)
            return None
        snapshot = self._snapshots.get(conversation_id, version.revision, version.created_at)
        if snapshot is None:
            # Read after the revision: the label is never newer than the messages.
            most = self._snapshots.max_messages
            rows = conn.execute(self._sql.all_messages, params | {"limit": most + 1}).all()
            if len(rows) > most:
                if len(self._large) >= _LARGE_REMEMBERED:
                    self._large.clear()
                self._large.add(conversation_id)
                return None
            messages = {row.id: dict(row._mapping) for row in rows}
            users = [m["id"] for m in messages.values() if m["role"] == "user"]
            snapshot = Snapshot(
                revision=version.revision,
                created_at=version.created_at,
                user_id=version.user_id,
                system_prompt=version.system_prompt,
                active_message_id=version.active_message_id,
                messages=messages,
                images=read_refs(conn, conversation_id, users),
                chars=sum(len(m["content"]) for m in messages.values()),
            )
            self._snapshots.keep(conversation_id, snapshot)
        return context_from(snapshot, request, limit)

    async def window(self, conversation_id: str, size: int) -> CachedWindow | None:
        """What the cache holds of a conversation: its row, totals and newest messages."""
        c = _conversations.c
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(select(_conversations).where(c.id == conversation_id))
            ).first()
            if row is None:
                return None
            summary = await conn.run_sync(_summary, conversation_id, row.user_id)
            messages, has_more = await conn.run_sync(_page, conversation_id, size, None)
            messages = await conn.run_sync(_with_images, conversation_id, messages)
        if summary is None:
            return None
        return CachedWindow(
            user_id=row.user_id,
            revision=row.revision,
            active_message_id=row.active_message_id,
            conversation=summary,
            messages=messages,
            complete=not has_more,
        )

    async def held(self, conversation_id: str, message_ids: Sequence[str]) -> set[str]:
        m = _messages.c
        query = select(m.id).where(m.conversation_id == conversation_id, m.id.in_(message_ids))
        return {row.id for row in await self._rows(query)}

    async def search_exchanges(
        self, user_id: str, conversation_id: str, query: str, limit: int
    ) -> list[Exchange]:
        words = query_terms(query)
        if not words or limit <= 0:
            return []
        search = self._search
        rows = await self._read(
            lambda conn: search.rows(conn, user_id, conversation_id, words, limit)
        )
        return [Exchange(question=row.question, answer=row.answer) for row in rows]

    async def list_conversations(self, request: ConversationListRequest) -> ConversationListReply:
        c, m = _conversations.c, _messages.c
        in_conversation = m.conversation_id == c.id
        query = _summary_query(*_access(c, request.user_id), unread_count(request.user_id)).where(
            _visible(c, request.user_id)
        )
        text = (request.q or "").strip()
        if text:
            pattern = "%" + _escape_like(text) + "%"
            query = query.where(
                or_(
                    c.title.ilike(pattern, escape="\\"),
                    exists().where(in_conversation, m.content.ilike(pattern, escape="\\")),
                )
            )
        if request.before is not None:
            anchor = _conversations.alias("anchor")
            a = anchor.c
            query = query.join_from(
                _conversations, anchor, and_(a.id == request.before, _visible(a, request.user_id))
            ).where(
                or_(c.updated_at < a.updated_at, and_(c.updated_at == a.updated_at, c.id < a.id))
            )
        query = query.order_by(c.updated_at.desc(), c.id.desc()).limit(request.limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return ConversationListReply(conversations=tuple(_summary_of(row) for row in rows))

    async def get_conversation(self, request: ConversationGetRequest) -> ConversationGetReply:
        # Every read on one connection (on the SQLite reader: inline).
        return await self._read(lambda conn: _conversation_page(conn, request))


def _conversation_page(conn: Connection, request: ConversationGetRequest) -> ConversationGetReply:
    summary = _summary(conn, request.conversation_id, request.user_id)
    if summary is None:
        return ConversationGetReply(conversation=None)
    if request.message_ids is not None:
        messages, has_more = _page(
            conn, request.conversation_id, request.limit, request.before, request.message_ids
        )
    else:
        messages, has_more = _branch(conn, request.conversation_id, request.limit, request.before)
    messages = with_siblings(messages, _children(conn, request.conversation_id, messages))
    messages = _with_images(conn, request.conversation_id, messages)
    readers = read_by(conn, request.conversation_id)
    return ConversationGetReply(
        conversation=summary, messages=messages, has_more=has_more, read_by=readers
    )


def _branch(
    conn: Connection, conversation_id: str, limit: int | None, before: str | None
) -> tuple[tuple[StoredMessage, ...], bool]:
    """The active branch in order: its newest `limit` messages (None: all), before
    message `before` (of the branch: the path up from its parent)."""
    params = {"conversation_id": conversation_id, "before": before, "limit": limit}
    statement = _branch_statement(before is not None, limit is not None)
    rows = conn.execute(statement, params).all()
    newest = [stored_message(row._mapping) for row in rows]
    if limit is None:
        return tuple(reversed(newest)), False
    page = tuple(reversed(newest[:limit]))
    bounded = newest_within_bytes(page)  # a page fits one NATS message
    return bounded, len(newest) > limit or len(bounded) < len(page)


@functools.cache
def _branch_statement(before: bool, limited: bool) -> Select[Any]:
    """conversation_id, before (when `before`), limit (when `limited`) -> the path up
    from the end of the active branch (or from `before`'s parent), newest first, `limit`
    and one more (built once: building it cost more than running it)."""
    c, m = _conversations.c, _messages.c
    conversation: Any = bindparam("conversation_id", type_=String())
    if not before:
        start: Any = select(c.active_message_id).where(c.id == conversation).scalar_subquery()
    else:
        start = (
            select(m.parent_id)
            .where(m.conversation_id == conversation, m.id == bindparam("before", type_=String()))
            .scalar_subquery()
        )
    path = (
        select(*m, literal_column("0").label("depth"))
        .where(m.conversation_id == conversation, m.id == start)
        .cte("branch", recursive=True)
    )
    up = _messages.alias("up")
    step = select(*up.c, (path.c.depth + 1).label("depth")).where(
        up.c.conversation_id == conversation, up.c.id == path.c.parent_id
    )
    if limited:
        # One more: tells `has_more`.
        step = step.where(path.c.depth < bindparam("limit", type_=Integer()))
    path = path.union_all(step)
    return select(path).order_by(path.c.depth)


def _with_images(
    conn: Connection, conversation_id: str, messages: tuple[StoredMessage, ...]
) -> tuple[StoredMessage, ...]:
    """The user messages with their images named (their bytes are asked one by one)."""
    users = [m.id for m in messages if m.role == "user"]
    refs = read_refs(conn, conversation_id, users)
    if not refs:
        return messages
    return tuple(
        m.model_copy(update={"attachments": refs[m.id]}) if m.id in refs else m for m in messages
    )


def _children(
    conn: Connection, conversation_id: str, messages: Sequence[StoredMessage]
) -> dict[str | None, list[str]]:
    """The ids of the messages of each of `messages`' parents, oldest first."""
    parents = {message.parent_id for message in messages}
    if not parents:
        return {}
    named = [parent for parent in parents if parent is not None]
    params = {"conversation_id": conversation_id, "parents": named}
    return children_of(conn.execute(_children_statement(None in parents), params))


@functools.cache
def _children_statement(with_roots: bool) -> Select[Any]:
    """conversation_id, parents (a list) -> (id, parent_id) of their messages, and of the
    first messages when `with_roots`, oldest first (built once)."""
    m = _messages.c
    of_parent: Any = m.parent_id.in_(bindparam("parents", expanding=True))
    if with_roots:
        of_parent = or_(of_parent, m.parent_id.is_(None))
    return (
        select(m.id, m.parent_id)
        .where(m.conversation_id == bindparam("conversation_id", type_=String()), of_parent)
        .order_by(m.created_at, m.id)
    )


def _read_rows(
    engine: Engine, query: Executable, params: Mapping[str, Any] | None
) -> Sequence[Row[Any]]:
    with engine.connect() as conn:
        return conn.execute(query, params).all()


def _read_with(engine: Engine, read: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        return read(conn)


def _write_with(engine: Engine, write: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return write(conn)


def _summary(conn: Connection, conversation_id: str, user_id: str) -> ConversationSummary | None:
    """The conversation as `user_id` sees it (None: they may not)."""
    params = {"conversation_id": conversation_id, "user_id": user_id}
    row = conn.execute(_summary_statement(), params).first()
    return None if row is None else _summary_of(row)


@functools.cache
def _summary_statement() -> Select[Any]:
    """conversation_id, user_id -> the conversation's summary as the user sees it, with
    its system prompt (built once)."""
    c = _conversations.c
    user: Any = bindparam("user_id", type_=Text())
    return _summary_query(c.system_prompt, *_access(c, user)).where(
        c.id == bindparam("conversation_id", type_=String()), _visible(c, user)
    )


def _membership(c: Any, user_id: str) -> Any:
    """`user_id`'s row in the members of conversation `c`."""
    b = _members.c
    return and_(b.conversation_id == c.id, b.user_id == user_id)


def _visible(c: Any, user_id: str) -> Any:
    """Conversation `c` is `user_id`'s, or they are one of its members or viewers: the one
    access rule of every read (the gateway's `Ownership` caches its answer)."""
    return or_(c.user_id == user_id, exists().where(_membership(c, user_id)))


def _sender(c: Any, user_id: str) -> Any:
    """`user_id` may send into (and change) conversation `c`: its owner or a member."""
    b = _members.c
    return or_(c.user_id == user_id, exists().where(_membership(c, user_id), b.role == "member"))


def _access(c: Any, user_id: str) -> tuple[Any, ...]:
    """The columns of a summary that depend on who asks: their role, the assistant's
    state, and the owner."""
    b = _members.c
    member_role = select(b.role).where(_membership(c, user_id)).scalar_subquery()
    return (
        case((c.user_id == user_id, literal("owner")), else_=member_role).label("role"),
        case((c.assistant_off, literal("off")), else_=literal("on")).label("assistant"),
        c.user_id.label("owner_id"),
    )


# What a summary query selects, by field name; `system_prompt` only where asked for.
_SUMMARY_FIELDS = tuple(ConversationSummary.model_fields)


def _summary_query(*more: Any) -> Select[Any]:
    """Each conversation's summary columns, its message count and tokens, then `more`."""
    c, m = _conversations.c, _messages.c
    in_conversation = m.conversation_id == c.id
    return select(
        c.id,
        c.title,
        c.created_at,
        c.updated_at,
        select(func.count()).where(in_conversation).scalar_subquery().label("message_count"),
        select(func.coalesce(func.sum(m.total_tokens), 0))
        .where(in_conversation)
        .scalar_subquery()
        .label("total_tokens"),
        *more,
    )


def _summary_of(row: Row[Any]) -> ConversationSummary:
    """A row of `_summary_query` as a summary (the fields it selected, no other)."""
    selected = row._mapping
    return ConversationSummary.model_validate(
        {name: selected[name] for name in _SUMMARY_FIELDS if name in selected}
    )


def _page(
    conn: Connection,
    conversation_id: str,
    limit: int | None,
    before: str | None,
    message_ids: Sequence[str] | None = None,
) -> tuple[tuple[StoredMessage, ...], bool]:
    """Messages in order: the newest `limit` (None: all) before message `before`,
    among `message_ids` when given.

    An unknown `before` gives no messages."""
    m = _messages.c
    query = select(_messages).where(m.conversation_id == conversation_id)
    if message_ids is not None:
        query = query.where(m.id.in_(message_ids))
    if before is not None:
        anchor = _messages.alias("anchor")
        a = anchor.c
        query = query.join(
            anchor, and_(a.conversation_id == conversation_id, a.id == before)
        ).where(or_(m.created_at < a.created_at, and_(m.created_at == a.created_at, m.id < a.id)))
    if limit is None:
        rows = (conn.execute(query.order_by(m.created_at, m.id))).all()
        return tuple(stored_message(row._mapping) for row in rows), False
    newest = (conn.execute(query.order_by(m.created_at.desc(), m.id.desc()).limit(limit + 1))).all()
    page = tuple(stored_message(row._mapping) for row in reversed(newest[:limit]))
    bounded = newest_within_bytes(page)
    return bounded, len(newest) > limit or len(bounded) < len(page)


def _prompt(value: str | None) -> str | None:
    # An empty system prompt is none.
    return _text(value) or None if value is not None else None


def _text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; drop it everywhere so both backends agree.
    return value.replace("\x00", "")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
