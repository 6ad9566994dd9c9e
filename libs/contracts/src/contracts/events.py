"""Event models carried over NATS. Frozen, versioned, and the only wire schema.

Two families:

* chat/work/usage events between services (`UserMessageAccepted`,
  `GenerationRequested`, `GenerationFinished`, `GenerationFailed`,
  `UsageReported`, `UsageRecorded`);
* conversation events published on a conversation's events subject and relayed
  verbatim to clients (`StartEvent`, `TokenEvent`, `StatusEvent`, `DoneEvent`,
  `ErrorEvent`, `MessageEvent`). Their public `event_id` is the JetStream
  sequence of the events stream, assigned by NATS, so it is not a field here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from contracts.attachments import AttachmentRef, Image
from contracts.ids import ID_PATTERN

__all__ = [
    "CHAT_EVENT",
    "CONVERSATION_EVENT",
    "SCHEMA_VERSION",
    "AccessChanged",
    "CancelRequested",
    "ChatEvent",
    "ContextMessage",
    "ContextRole",
    "ConversationDeleted",
    "ConversationEvent",
    "DoneEvent",
    "ErrorEvent",
    "Event",
    "FeedbackChanged",
    "FeedbackRating",
    "FinishReason",
    "GenerationFailed",
    "GenerationFinished",
    "GenerationOptions",
    "GenerationRequested",
    "MessageEvent",
    "MessageStatus",
    "Outcome",
    "ResyncEvent",
    "Role",
    "StartEvent",
    "StatusEvent",
    "TokenEvent",
    "ToolCall",
    "ToolCallEvent",
    "ToolChoice",
    "ToolSpec",
    "Usage",
    "UsageRecorded",
    "UsageReported",
    "UserMessageAccepted",
]

SCHEMA_VERSION = 1

Id = Annotated[str, Field(pattern=ID_PATTERN)]
Role = Literal["user", "assistant", "system"]
# A model's context may also hold tool results (the OpenAI endpoint's `role: "tool"`).
ContextRole = Literal["user", "assistant", "system", "tool"]
MessageStatus = Literal["complete", "streaming", "cancelled", "failed", "interrupted"]
# `tool_calls`: the answer ends with function calls for the caller to run (OpenAI endpoint).
FinishReason = Literal["stop", "length", "cancelled", "content_filter", "tool_calls"]
Outcome = Literal["completed", "cancelled", "failed", "interrupted", "switched"]
FeedbackRating = Literal["up", "down"]


def _unset(value: object) -> bool:
    """A field added later at its default: left out of the JSON (see `exclude_if`)."""
    return not value


class Event(BaseModel):
    """Base of every event: immutable, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class GenerationOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    system_prompt: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


class ToolCall(BaseModel):
    """A function call the model made, as OpenAI's `tool_calls` items carry it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


class ToolSpec(BaseModel):
    """A function the model may call (OpenAI's `tools[].function`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object


class ToolChoice(BaseModel):
    """Whether the model may (`auto`), must (`required`) or must not (`none`) call a
    function; `name`: the one function it must call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["auto", "none", "required"] = "auto"
    name: str | None = None


class ContextMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: ContextRole
    content: str
    # The stored message it is (memory's context), to find its images by; None: stateless.
    id: str | None = Field(default=None, exclude_if=_unset)
    # An assistant message's function calls; a `tool` message answers one of them.
    # Left out of the JSON when unset, so that services not knowing them read it.
    tool_calls: tuple[ToolCall, ...] = Field(default=(), exclude_if=_unset)
    tool_call_id: str | None = Field(default=None, exclude_if=_unset)
    # The message's images by name (stateless requests: any message of the history).
    attachments: tuple[AttachmentRef, ...] = Field(default=(), exclude_if=_unset)
    # The message's images, with their bytes: filled in by the worker from memory's
    # store just before the provider call, never published (`contracts.attachments`).
    images: tuple[Image, ...] = Field(default=(), exclude_if=_unset)


# --- chat history (stream LIVECHAT_CHAT) ---------------------------------------


class UserMessageAccepted(Event):
    """A user message the gateway validated and accepted."""

    kind: Literal["user_message"] = "user_message"
    message_id: Id
    conversation_id: Id
    user_id: str
    content: str
    created_at: datetime
    system_prompt: str | None = None
    # Its place in the conversation's tree: `parent_id` None continues the active
    # branch (from its end when memory stores it), unless `root`: a new first message
    # (the edit of a first message). Events without them continue the active branch.
    parent_id: Id | None = None
    root: bool = False
    # Who wrote it when not `user_id` (the conversation's owner): a member of a shared
    # conversation. The message is stored and answered under the owner's account.
    author_id: str | None = Field(default=None, exclude_if=_unset)
    # Its images, stored by memory before this was published (`contracts.attachments`).
    attachments: tuple[AttachmentRef, ...] = Field(default=(), exclude_if=_unset)


class GenerationFinished(Event):
    """An assistant message that reached an end: complete, cancelled or interrupted."""

    kind: Literal["generation_finished"] = "generation_finished"
    message_id: Id
    conversation_id: Id
    user_id: str
    reply_to: Id
    content: str
    status: MessageStatus
    finish_reason: FinishReason
    model: str
    provider: str
    usage: Usage
    created_at: datetime
    finished_at: datetime
    # Another answer to a user message answered before: memory makes it the end of the
    # active branch.
    regenerated: bool = False


class GenerationFailed(Event):
    """An assistant message that could not be produced; partial content kept."""

    kind: Literal["generation_failed"] = "generation_failed"
    message_id: Id
    conversation_id: Id
    user_id: str
    reply_to: Id
    content: str = ""
    code: str
    message: str
    retryable: bool
    model: str | None = None
    provider: str | None = None
    created_at: datetime
    finished_at: datetime
    regenerated: bool = False


ChatEvent: TypeAlias = Annotated[
    UserMessageAccepted | GenerationFinished | GenerationFailed,
    Field(discriminator="kind"),
]
CHAT_EVENT: TypeAdapter[ChatEvent] = TypeAdapter(ChatEvent)


# --- work queue (stream LIVECHAT_WORK) -------------------------------------------


class GenerationRequested(Event):
    """Ask the inference workers to answer a user message.

    Carries the user message itself so that a worker does not depend on memory
    having stored it yet. `history` is set for stateless requests (the
    OpenAI-compatible endpoint); when it is None the worker asks memory for the
    conversation's context.
    """

    kind: Literal["generation_requested"] = "generation_requested"
    message_id: Id  # the assistant message to produce
    conversation_id: Id
    user_id: str
    user_message_id: Id
    content: str
    options: GenerationOptions = GenerationOptions()
    history: tuple[ContextMessage, ...] | None = None
    persist: bool = True
    requested_at: datetime
    # The user message's place in the tree (as in `UserMessageAccepted`): the context
    # is the path from the root to its parent, found by memory even before it holds
    # the message.
    parent_id: Id | None = None
    root: bool = False
    # Another answer to a stored user message (a new sibling of its earlier replies).
    regenerated: bool = False
    # The functions the model may call, and how (stateless requests only). These are
    # left out of the JSON when unset, so that workers not knowing them read it.
    tools: tuple[ToolSpec, ...] = Field(default=(), exclude_if=_unset)
    tool_choice: ToolChoice | None = Field(default=None, exclude_if=_unset)
    # True: `history` ends with the messages to answer (tool results), and `content`
    # (empty) is no user turn of its own.
    prompt_in_history: bool = Field(default=False, exclude_if=_unset)
    # The user message's images (stored first; the worker reads their bytes from memory).
    attachments: tuple[AttachmentRef, ...] = Field(default=(), exclude_if=_unset)


class CancelRequested(Event):
    """The stop button of a conversation (core NATS on `cancel(conv)`, and kept in the
    cancel bucket so that a request still queued or redelivered is stopped too).

    It stops the caller's generations of the conversation whose work message has a
    stream sequence in `LIVECHAT_WORK` at or below `before_seq`: the ones requested
    before the stop, never a later one.
    """

    kind: Literal["cancel_requested"] = "cancel_requested"
    conversation_id: Id
    user_id: str
    before_seq: int = Field(ge=0)
    requested_at: datetime


# --- deletions (core NATS, not stored) ---------------------------------------------


class ConversationDeleted(Event):
    """A conversation was deleted (by its owner or by retention), announced by memory on
    `conversation_deleted(conv)` once committed: every gateway forgets who owned it and
    ends every attachment to it (its clients get `not_found`), since its id may be
    anyone's next."""

    kind: Literal["conversation_deleted"] = "conversation_deleted"
    conversation_id: Id


class AccessChanged(Event):
    """Who may do what in a conversation changed (a member added, changed or removed, the
    assistant turned off or on), announced by the gateway that made the change once memory
    committed it, on `access_changed(conv)`: every gateway forgets what it remembered of
    the conversation's access, and ends the attachments of `removed` (a member removed)."""

    kind: Literal["access_changed"] = "access_changed"
    conversation_id: Id
    removed: str | None = None


# --- usage (stream LIVECHAT_USAGE) -------------------------------------------------


class UsageReported(Event):
    """The usage of one generation attempt, reported once by the worker."""

    kind: Literal["usage_reported"] = "usage_reported"
    attempt_id: str
    message_id: Id
    conversation_id: Id
    user_id: str
    model: str  # the alias the request used
    provider: str
    provider_model: str
    usage: Usage
    estimated: bool = False
    outcome: Outcome
    time_to_first_token_ms: float | None = None
    duration_ms: float
    occurred_at: datetime


class UsageRecorded(Event):
    """A ledger entry, republished for analytics consumers."""

    kind: Literal["usage_recorded"] = "usage_recorded"
    attempt_id: str
    message_id: Id
    conversation_id: Id
    user_id: str
    model: str
    provider: str
    provider_model: str
    usage: Usage
    estimated: bool
    outcome: Outcome
    time_to_first_token_ms: float | None
    duration_ms: float
    occurred_at: datetime
    recorded_at: datetime
    # From the price table in force when recorded (LIVECHAT_PRICES); None: unpriced.
    cost_usd: float | None = None


# --- feedback (stream LIVECHAT_FEEDBACK) -------------------------------------------


class FeedbackChanged(Event):
    """A user's feedback on an answer was set or (`rating` None) removed: one per change,
    published by memory after its commit, for analytics consumers. A change may arrive
    after a later one (republished): the latest `changed_at` (then `change_id`) wins."""

    kind: Literal["feedback_changed"] = "feedback_changed"
    change_id: str
    conversation_id: Id
    message_id: Id
    user_id: str
    rating: FeedbackRating | None
    comment: str | None = None
    changed_at: datetime


# --- conversation events (stream LIVECHAT_EVENTS; relayed to clients) -------------


class StartEvent(Event):
    type: Literal["start"] = "start"
    message_id: Id
    conversation_id: Id
    model: str
    provider: str


class TokenEvent(Event):
    type: Literal["token"] = "token"
    message_id: Id
    content: str


class StatusEvent(Event):
    type: Literal["status"] = "status"
    message_id: Id
    state: Literal["queued", "generating", "retrying", "provider_switched"]
    # queued, in two stages, each counting the requests that will be served before it:
    # - no worker has fetched it yet (every worker busy; published by the gateway, again
    #   when the count changes): the requests queued before it that no worker has
    #   fetched either, i.e. the unfetched work messages with a lower stream sequence
    #   (0: the next one a worker fetches). Requests a worker already holds waiting for
    #   a slot (at most one per worker) are not counted.
    # - a worker holds it (published by that worker): the requests ahead of it for a
    #   slot of that worker (0: it starts as soon as one of that worker's generations ends).
    # Positions of a reply never increase, and no `queued` follows its `start`.
    position: int | None = None
    provider: str | None = None
    attempt: int | None = None
    detail: str | None = None


class ResyncEvent(Event):
    """The reply's whole text so far, replacing what its `token` events joined: some of
    them were lost in transit (NATS restarted mid-answer). Sent before its `done`/`error`."""

    type: Literal["resync"] = "resync"
    message_id: Id
    content: str


class ToolCallEvent(Event):
    """A piece of a function call the model is making, as OpenAI streams them: the first
    piece of call `index` carries its `id` and `name`, every piece a part of `arguments`."""

    type: Literal["tool_call"] = "tool_call"
    message_id: Id
    index: int = Field(ge=0)
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class DoneEvent(Event):
    type: Literal["done"] = "done"
    message_id: Id
    finish_reason: FinishReason
    usage: Usage
    model: str
    provider: str


class ErrorEvent(Event):
    type: Literal["error"] = "error"
    message_id: Id | None = None
    code: str
    message: str
    retryable: bool


class MessageEvent(Event):
    """A user message, echoed so that every client of the conversation shows it."""

    type: Literal["message"] = "message"
    message_id: Id
    role: Literal["user"] = "user"
    content: str
    created_at: datetime
    client_id: str | None = None
    # Its author (shown in shared conversations).
    user_id: str | None = Field(default=None, exclude_if=_unset)
    # Sent while the assistant was off (a person took over): no answer follows.
    unanswered: bool = Field(default=False, exclude_if=_unset)
    # Its images by name (their bytes are in the conversation's history).
    attachments: tuple[AttachmentRef, ...] = Field(default=(), exclude_if=_unset)


ConversationEvent: TypeAlias = Annotated[
    StartEvent
    | TokenEvent
    | ToolCallEvent
    | StatusEvent
    | ResyncEvent
    | DoneEvent
    | ErrorEvent
    | MessageEvent,
    Field(discriminator="type"),
]
CONVERSATION_EVENT: TypeAdapter[ConversationEvent] = TypeAdapter(ConversationEvent)
