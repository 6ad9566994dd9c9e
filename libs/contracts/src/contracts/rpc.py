"""Request-reply models (core NATS) between the gateway, inference and the backends."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from contracts.attachments import AttachmentRef, ImageMediaType, StoredImage
from contracts.events import (
    ContextMessage,
    FeedbackRating,
    FinishReason,
    MessageStatus,
    Role,
    Usage,
    UsageRecorded,
)

__all__ = [
    "FEEDBACK_COMMENT_MAX_CHARS",
    "HISTORY_PAGE_MAX_BYTES",
    "SYSTEM_PROMPT_MAX_CHARS",
    "TITLE_MAX_CHARS",
    "AccessRole",
    "AttachmentGetReply",
    "AttachmentGetRequest",
    "AttachmentPutReply",
    "AttachmentPutRequest",
    "ContextReply",
    "ContextRequest",
    "ConversationCreateRequest",
    "ConversationDeleteReply",
    "ConversationDeleteRequest",
    "ConversationGetReply",
    "ConversationGetRequest",
    "ConversationListReply",
    "ConversationListRequest",
    "ConversationSummary",
    "ConversationUpdateRequest",
    "ConversationWriteReply",
    "Feedback",
    "FeedbackDeleteRequest",
    "FeedbackEntry",
    "FeedbackExportReply",
    "FeedbackExportRequest",
    "FeedbackOutcome",
    "FeedbackSetRequest",
    "FeedbackWriteReply",
    "Member",
    "MemberRole",
    "MembersReply",
    "MembersRequest",
    "Pong",
    "ReadMarkReply",
    "ReadMarkRequest",
    "ReplyError",
    "Rpc",
    "Siblings",
    "StoredMessage",
    "UsageExportReply",
    "UsageExportRequest",
    "UsageGroupBy",
    "UsageTotals",
    "UsageTotalsReply",
    "UsageTotalsRequest",
]


class Rpc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = 1


class ContextRequest(Rpc):
    """Everything a worker needs to prompt the model for one reply."""

    conversation_id: str
    user_id: str
    reply_id: str  # the assistant message being produced
    user_message_id: str
    limit: int = Field(default=20, ge=0)
    # The user message's text: what the knowledge base and personal memory are searched
    # for (memory may not hold the message yet). None: memory uses what it holds.
    query: str | None = None
    # The user message's parent, for when memory does not hold the message yet (see
    # `GenerationRequested`): None the end of the active branch, unless `root`.
    parent_id: str | None = None
    root: bool = False


class ReplyError(BaseModel):
    """Why a reply failed: the public fields of its `error` event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    message: str
    retryable: bool


class Siblings(BaseModel):
    """A message's place among the messages of the same parent (oldest first)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    count: int = Field(ge=1)
    ids: tuple[str, ...]


FEEDBACK_COMMENT_MAX_CHARS = 2000


class Feedback(BaseModel):
    """A user's feedback on an answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rating: FeedbackRating
    comment: str | None = Field(default=None, max_length=FEEDBACK_COMMENT_MAX_CHARS)
    updated_at: datetime


class StoredMessage(Rpc):
    id: str
    role: Role
    content: str
    status: MessageStatus
    created_at: datetime
    # A user message's author: the owner, or a member of a shared conversation.
    user_id: str | None = None
    # The message it follows in the conversation's tree (None: a first message).
    parent_id: str | None = None
    # Set in the messages of a conversation read (the active branch).
    siblings: Siblings | None = None
    model: str | None = None
    provider: str | None = None
    usage: Usage | None = None
    # How a final reply ended: its `done` event's finish reason, or its `error` event's
    # code and message. None for user messages and for replies stored before memory
    # kept them (their end is then told from `status`).
    finish_reason: FinishReason | None = None
    error: ReplyError | None = None
    # The asker's feedback on an assistant message (set when the read asked for it).
    feedback: Feedback | None = None
    # Its images by name (their bytes: `AttachmentGetRequest`); left out when none.
    attachments: tuple[AttachmentRef, ...] = Field(default=(), exclude_if=lambda v: not v)


class ContextReply(Rpc):
    system_prompt: str | None = None
    # The last `limit` messages of the path from the first message to the user
    # message's parent (oldest first), without it.
    messages: tuple[ContextMessage, ...] = ()
    # The reply if memory already holds it in a final state (a redelivered request).
    existing_reply: StoredMessage | None = None


TITLE_MAX_CHARS = 200
SYSTEM_PROMPT_MAX_CHARS = 32000

# Who someone is in a conversation: its owner > a member (reads, attaches, sends) >
# a viewer (reads, attaches).
AccessRole: TypeAlias = Literal["owner", "member", "viewer"]
MemberRole: TypeAlias = Literal["member", "viewer"]


class ConversationSummary(Rpc):
    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int
    total_tokens: int
    # Set in the replies about one conversation (get, create, update), not in lists.
    system_prompt: str | None = None
    # Set in lists: the messages after the caller's read position (all of them when the
    # caller never read it), not counting the caller's own (user) messages.
    unread_count: int | None = None
    # The caller's role in it, and whether the assistant answers ("off": a human took
    # over). Set by memory in every reply; None only in summaries cached before them.
    role: AccessRole | None = None
    assistant: Literal["on", "off"] | None = None
    # Whose conversation it is: the account its messages are stored and answered under.
    owner_id: str | None = None


class ConversationListRequest(Rpc):
    user_id: str
    q: str | None = None
    limit: int = Field(default=50, ge=1, le=200)
    # A conversation id of the previous page: the list continues after it.
    before: str | None = None


class ConversationListReply(Rpc):
    conversations: tuple[ConversationSummary, ...]


class ConversationGetRequest(Rpc):
    user_id: str
    conversation_id: str
    # The active branch: None every message of it; else its newest `limit` messages
    # (before `before`, a message id of it).
    limit: int | None = Field(default=None, ge=1, le=1000)
    before: str | None = None
    # Only these messages (a lookup by id, whatever the conversation's size); with
    # `limit`/`before` too, the page is taken from them.
    message_ids: tuple[str, ...] | None = Field(default=None, max_length=100)
    # The asker's feedback on each assistant message returned (`StoredMessage.feedback`).
    with_feedback: bool = False


# The messages of a paged answer (`limit` set) fit this many bytes of JSON (at least one
# message, whatever its size): with the conversation around them, the answer stays under
# NATS's default max_payload (1 MiB). `has_more` tells the client to page on.
HISTORY_PAGE_MAX_BYTES = 512 * 1024


class ConversationGetReply(Rpc):
    # None when the conversation does not exist or belongs to someone else.
    conversation: ConversationSummary | None
    messages: tuple[StoredMessage, ...] = ()
    # Older messages precede the ones returned.
    has_more: bool = False
    # The last message each user has read in the conversation: user id -> message id.
    read_by: dict[str, str] = Field(default_factory=dict)


class ConversationCreateRequest(Rpc):
    """Idempotent: creating an id the same user already holds returns that conversation."""

    user_id: str
    conversation_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    title: str | None = Field(default=None, min_length=1, max_length=TITLE_MAX_CHARS)
    system_prompt: str | None = Field(default=None, max_length=SYSTEM_PROMPT_MAX_CHARS)


class ConversationUpdateRequest(Rpc):
    """Fields left None stay; an empty system prompt removes it."""

    user_id: str
    conversation_id: str
    title: str | None = Field(default=None, min_length=1, max_length=TITLE_MAX_CHARS)
    system_prompt: str | None = Field(default=None, max_length=SYSTEM_PROMPT_MAX_CHARS)
    # The active branch becomes the one ending at (or going through) this message.
    active_message_id: str | None = None
    # "off": user messages are stored and relayed, not answered (owner or member).
    assistant: Literal["on", "off"] | None = None


class ConversationWriteReply(Rpc):
    # None when the conversation does not exist or belongs to someone else.
    conversation: ConversationSummary | None
    created: bool = False
    # The update named an `active_message_id` the conversation does not hold.
    unknown_message: bool = False
    # The caller may read it but not make this change (a viewer's, a member's title).
    forbidden: bool = False


class Member(Rpc):
    user_id: str
    role: AccessRole


class MembersRequest(Rpc):
    """Read (`action` "list"), add or change (`"add"`: owner only) or remove (`"remove"`:
    the owner, or a member leaving) the members of a conversation. Idempotent."""

    user_id: str  # the caller
    conversation_id: str
    action: Literal["list", "add", "remove"] = "list"
    member_id: str | None = None  # whom "add" and "remove" are about
    role: MemberRole = "member"


class MembersReply(Rpc):
    # None when the caller may not see the conversation.
    conversation: ConversationSummary | None
    # The owner first (role "owner"), then the members in the order they joined.
    members: tuple[Member, ...] = ()
    # The caller may see the conversation but not make this change.
    forbidden: bool = False
    # "remove" of someone who is no member, "add" of the owner.
    unknown_member: bool = False


class ConversationDeleteRequest(Rpc):
    user_id: str
    conversation_id: str


class ConversationDeleteReply(Rpc):
    # Also True when this user had already deleted it (a repeated request).
    deleted: bool


class FeedbackSetRequest(Rpc):
    """Set (or replace) the user's feedback on an assistant message of a conversation
    the user may read. Idempotent: the same feedback again changes nothing."""

    user_id: str
    conversation_id: str
    message_id: str
    rating: FeedbackRating
    comment: str | None = Field(default=None, max_length=FEEDBACK_COMMENT_MAX_CHARS)


class FeedbackDeleteRequest(Rpc):
    """Remove the user's feedback on a message (idempotent)."""

    user_id: str
    conversation_id: str
    message_id: str


FeedbackOutcome: TypeAlias = Literal[
    "stored", "deleted", "no_conversation", "no_message", "not_assistant"
]


class FeedbackWriteReply(Rpc):
    outcome: FeedbackOutcome
    # The feedback as stored (outcome "stored").
    feedback: Feedback | None = None


class FeedbackEntry(Rpc):
    """A feedback as the export lists it."""

    conversation_id: str
    message_id: str
    user_id: str
    feedback: Feedback


class FeedbackExportRequest(Rpc):
    """One page of a user's feedback, oldest change first."""

    user_id: str
    # The `cursor` of the previous page.
    after: str | None = None
    limit: int = Field(default=500, ge=1, le=5000)


class FeedbackExportReply(Rpc):
    entries: tuple[FeedbackEntry, ...]
    # Set when more entries follow: pass it back as `after`.
    cursor: str | None = None


class ReadMarkRequest(Rpc):
    """The user has read the conversation up to `message_id` (idempotent)."""

    user_id: str
    conversation_id: str
    message_id: str


class ReadMarkReply(Rpc):
    # False when the conversation does not exist or belongs to someone else.
    found: bool
    # The conversation holds no such message: nothing changed.
    unknown_message: bool = False
    # The user's read position now: the message named, or a later one already read
    # (a read position only moves forward in the conversation's order).
    message_id: str | None = None
    # The position moved to `message_id` (False: already there or beyond).
    moved: bool = False


class UsageTotals(Rpc):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # In US dollars, when LIVECHAT_PRICES prices the models used.
    cost_usd: float | None = None


UsageGroupBy: TypeAlias = Literal["model", "provider", "conversation"]


class UsageTotalsRequest(Rpc):
    user_id: str
    # A half-open window [since, until) of `occurred_at`; None: unbounded.
    since: datetime | None = None
    until: datetime | None = None
    group_by: UsageGroupBy | None = None


class UsageTotalsReply(Rpc):
    totals: UsageTotals
    by_model: dict[str, UsageTotals]
    # The totals per `group_by` key, when the request named one.
    groups: dict[str, UsageTotals] | None = None


class UsageExportRequest(Rpc):
    """One page of a user's ledger entries, oldest first."""

    user_id: str
    since: datetime | None = None
    until: datetime | None = None
    # The `cursor` of the previous page.
    after: str | None = None
    limit: int = Field(default=500, ge=1, le=5000)


class UsageExportReply(Rpc):
    entries: tuple[UsageRecorded, ...]
    # Set when more entries follow: pass it back as `after`.
    cursor: str | None = None


class Pong(Rpc):
    service: str


class AttachmentPutRequest(Rpc):
    """Store one image of a message before the message is published (idempotent: the
    same message id and position stored again keeps the first)."""

    user_id: str
    conversation_id: str
    message_id: str
    position: int = Field(ge=0)
    media_type: ImageMediaType
    data: str  # base64


class AttachmentPutReply(Rpc):
    ref: AttachmentRef


class AttachmentGetRequest(Rpc):
    """One image of a message (the caller checked who may read it): one per request, as
    each fits a NATS message (the gateway's limits) and several may not."""

    conversation_id: str
    message_id: str
    position: int = Field(ge=0)


class AttachmentGetReply(Rpc):
    image: StoredImage | None = None  # None: not stored (or its conversation was deleted)
