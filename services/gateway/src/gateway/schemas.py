"""Bodies and frames clients send, and the shapes the gateway answers with."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from contracts import rpc
from contracts.attachments import ImageMediaType
from contracts.events import Usage
from contracts.ids import ID_PATTERN

__all__ = [
    "MAX_TOKENS",
    "USER_ID_MAX_CHARS",
    "WS_FRAME",
    "AttachmentIn",
    "AttachmentOut",
    "CancelOut",
    "ConversationList",
    "ConversationOut",
    "ConversationPage",
    "ErrorDetail",
    "ErrorOut",
    "FeedbackIn",
    "FeedbackOut",
    "HealthOut",
    "Id",
    "MemberIn",
    "MemberList",
    "MemberOut",
    "MessageIn",
    "MessageOut",
    "NotReadyOut",
    "ReadIn",
    "ReadOut",
    "ReadyOut",
    "RegenerateIn",
    "ReplyOut",
    "Strict",
    "UnansweredOut",
    "UsageOut",
    "UsageTotalsOut",
    "WsCancel",
    "WsFrame",
    "WsMessage",
    "WsPing",
    "WsRead",
    "WsRegenerate",
    "WsSubscribe",
    "WsTyping",
    "public",
]

Id = Annotated[str, Field(pattern=ID_PATTERN)]

MAX_TOKENS = 32768  # the largest answer a client may ask for


class Strict(BaseModel):
    """A body or frame a client sends: unknown fields are refused; read-only once parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AttachmentIn(Strict):
    """An image of a message: its bytes in base64 (standard alphabet, padded)."""

    type: Literal["image"]
    media_type: ImageMediaType
    data: str = Field(min_length=1, description="the image's bytes, base64")


class AttachmentOut(BaseModel):
    """An image of a stored message."""

    type: Literal["image"] = "image"
    media_type: ImageMediaType
    data: str = Field(description="the image's bytes, base64")


class MessageIn(Strict):
    """The body of POST /v1/conversations/{id}/messages."""

    content: str = Field(min_length=1)
    id: Id | None = None
    model: str | None = None
    # As for a conversation's (create, PATCH): it is stored and sent on every turn.
    system_prompt: str | None = Field(default=None, max_length=rpc.SYSTEM_PROMPT_MAX_CHARS)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    # allow_inf_nan: NaN would pass both bounds (every comparison with it is false).
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)
    # The message it follows: absent, the end of the active branch; an earlier one
    # starts a branch there (an edit); null, a new first message.
    parent_id: Id | None = None
    # Images (LIVECHAT_ATTACHMENTS_MAX_COUNT, each LIVECHAT_ATTACHMENT_MAX_BYTES at most).
    attachments: tuple[AttachmentIn, ...] = ()

    @property
    def root(self) -> bool:
        """A new first message: `parent_id` given as null."""
        return self.parent_id is None and "parent_id" in self.model_fields_set


class RegenerateIn(Strict):
    """The body of POST /v1/conversations/{id}/messages/{message_id}/regenerate (optional)."""

    model: str | None = None
    system_prompt: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2, allow_inf_nan=False)


class WsMessage(MessageIn):
    type: Literal["message"]
    conversation_id: Id


class WsPing(Strict):
    type: Literal["ping"]


class WsSubscribe(Strict):
    type: Literal["subscribe"]
    conversation_id: Id
    last_event_id: int | None = Field(default=None, ge=0)


class WsTyping(Strict):
    type: Literal["typing"]
    conversation_id: Id
    is_typing: bool


class WsCancel(Strict):
    type: Literal["cancel"]
    conversation_id: Id


class WsRegenerate(RegenerateIn):
    type: Literal["regenerate"]
    conversation_id: Id
    message_id: Id


class WsRead(Strict):
    """The user has read the conversation up to `message_id` (stored); the older form
    names an `event_id` instead, and is only relayed to the other clients."""

    type: Literal["read"]
    conversation_id: Id
    message_id: Id | None = None
    event_id: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _names_a_position(self) -> WsRead:
        if self.message_id is None and self.event_id is None:
            raise ValueError("give a message_id")
        return self


class ReadIn(Strict):
    """The body of PUT /v1/conversations/{id}/read: the last message the caller has read."""

    message_id: Id


class ReadOut(BaseModel):
    """The caller's read position now: the message named, or a later one read before (it
    never moves back)."""

    user_id: str
    message_id: str


WsFrame: TypeAlias = Annotated[
    WsMessage | WsPing | WsSubscribe | WsTyping | WsRead | WsCancel | WsRegenerate,
    Field(discriminator="type"),
]
WS_FRAME: TypeAdapter[WsFrame] = TypeAdapter(WsFrame)


def public(model: rpc.Rpc) -> dict[str, Any]:
    """An RPC model as clients see it: without the wire version."""
    return model.model_dump(mode="json", exclude={"schema_version"}, exclude_none=True)


class _Public(BaseModel):
    """Hides the wire version: the shapes below are RPC models as clients see them."""

    schema_version: int = Field(default=1, exclude=True)


class MessageOut(_Public, rpc.StoredMessage):
    """A stored message."""

    # With their bytes; left out when none.
    attachments: tuple[AttachmentOut, ...] = Field(  # type: ignore[assignment]
        default=(), exclude_if=lambda v: not v
    )


class UnansweredOut(BaseModel):
    """A message sent while the assistant is off (202): stored and relayed, not answered."""

    message: MessageOut


class ConversationOut(_Public, rpc.ConversationSummary):
    """A conversation (GET /v1/conversations/{id} adds its messages)."""


class ConversationPage(ConversationOut):
    """A conversation with its newest messages (`before`: older ones), and the last
    message each user has read in it (`read_by`: user id -> message id)."""

    messages: list[MessageOut]
    has_more: bool
    read_by: dict[str, str]


class ConversationList(BaseModel):
    conversations: list[ConversationOut]


USER_ID_MAX_CHARS = 256


class MemberIn(Strict):
    """The body of POST /v1/conversations/{id}/members: whom to let in, and as what (a
    `member` reads, attaches and sends; a `viewer` reads and attaches). Adding someone
    again changes their role."""

    user_id: str = Field(min_length=1, max_length=USER_ID_MAX_CHARS)
    role: rpc.MemberRole = "member"


class MemberOut(_Public, rpc.Member):
    """Someone in a conversation: its `owner`, a `member` or a `viewer`."""


class MemberList(BaseModel):
    """The owner first, then the members in the order they joined."""

    members: list[MemberOut]


class UsageTotalsOut(_Public, rpc.UsageTotals):
    """Requests, tokens and (when priced) cost."""


class UsageOut(BaseModel):
    """GET /v1/usage: totals, per model, and per `group_by` key when asked."""

    totals: UsageTotalsOut
    by_model: dict[str, UsageTotalsOut]
    by_provider: dict[str, UsageTotalsOut] | None = None
    by_conversation: dict[str, UsageTotalsOut] | None = None


class FeedbackIn(Strict):
    """The body of PUT /v1/conversations/{id}/messages/{message_id}/feedback."""

    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=rpc.FEEDBACK_COMMENT_MAX_CHARS)


class FeedbackOut(BaseModel):
    """The caller's feedback on an answer, as stored."""

    conversation_id: str
    message_id: str
    rating: Literal["up", "down"]
    comment: str | None = None
    updated_at: datetime


class ReplyOut(BaseModel):
    """The JSON answer of a send: the assistant message as stored, and its usage."""

    message: MessageOut
    usage: Usage


class CancelOut(BaseModel):
    """Whether a generation of the conversation was queued or running, and is being stopped."""

    cancelled: bool


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    """What was checked (NATS, the events stream, each backend service), all answering."""

    status: Literal["ready"]
    checks: dict[str, bool]


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, for programs (snake_case)")
    message: str = Field(description="for humans; may change")
    message_id: str | None = Field(
        default=None, description="a message that could not be queued: retry with this id"
    )


class ErrorOut(BaseModel):
    """The one error shape of the public API."""

    error: ErrorDetail


class NotReadyOut(ErrorOut):
    """GET /readyz when something it checks does not answer (`checks` names it)."""

    checks: dict[str, bool]
