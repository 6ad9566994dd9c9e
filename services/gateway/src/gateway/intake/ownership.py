"""Who may do what in a conversation: the one access check of every protocol.

Roles, strongest first: its `owner`; a `member` (reads, attaches, sends); a `viewer`
(reads and attaches); anyone else gets 404. Memory decides (one rule for every read,
`memory.history.repository._visible`); its answer (a `Grant`: the caller's role, the
owner, whether the assistant answers) is remembered per gateway process so that later
requests skip the round trip. An id nobody holds becomes the caller's when they send.

What is remembered is forgotten at once when it changes: a deleted conversation through
this gateway by its delete route, elsewhere (another gateway, retention) when memory
announces it (`gateway.fanout.deletions`); a change of members or of the assistant switch
when the gateway that made it announces it (`gateway.fanout.access`). A gateway that was
disconnected may have missed announcements: it forgets everything when it is back
(`clear`). `ttl_seconds` bounds what is left (an announcement dropped on the way).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from contracts import rpc
from gateway.backends import Backends, answer_of, found
from gateway.errors import ApiError

__all__ = ["Grant", "Ownership", "forbidden_to_send"]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a caller may do in a conversation."""

    role: rpc.AccessRole
    owner_id: str  # the account its messages are stored, answered and accounted under
    assistant: bool = True  # False: a person took over, messages are not answered

    @property
    def sends(self) -> bool:
        return self.role != "viewer"

    def author(self, user_id: str) -> str | None:
        """The author of a message `user_id` sends, when not the owner."""
        return None if user_id == self.owner_id else user_id

    @classmethod
    def of(cls, user_id: str, conversation: rpc.ConversationSummary) -> Grant:
        return cls(
            role=conversation.role or "owner",
            owner_id=conversation.owner_id or user_id,
            assistant=conversation.assistant != "off",
        )


def forbidden_to_send() -> ApiError:
    return ApiError(
        403, "forbidden", "you may read this conversation but not send into it (a viewer)"
    )


class Ownership:
    def __init__(
        self,
        backends: Backends,
        *,
        enabled: bool,
        size: int,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backends = backends
        # Off with auth off: every caller is the one local user, owner of everything
        # (memory is still asked, when sending, whether the assistant answers).
        self._enabled = enabled
        self._size = size
        self._ttl = ttl_seconds
        self._clock = clock
        # conversation id -> {user id -> (their grant, trusted until)}; least recently
        # used conversation first.
        self._grants: OrderedDict[str, dict[str, tuple[Grant, float]]] = OrderedDict()
        # Bumped by every `forget` and `clear`: an answer asked for before is not kept.
        self._changes = 0

    async def grant(self, user_id: str, conversation_id: str, *, create: bool = False) -> Grant:
        """What `user_id` may do in the conversation; 404 when they may not see it (an
        unknown id: becomes theirs when `create`), 503 when memory does not answer."""
        if not self._enabled and not create:
            return Grant("owner", user_id)  # nothing to check: one user
        now = self._clock()
        known = self._grants.get(conversation_id)
        held = None if known is None else known.get(user_id)
        if held is not None and held[1] > now:
            self._grants.move_to_end(conversation_id)
            return held[0]
        changes = self._changes
        if self._enabled:
            granted = Grant.of(user_id, found(await self._ask(user_id, conversation_id, create)))
        else:
            try:
                conversation = await self._ask(user_id, conversation_id, create=False)
            except ApiError:
                # Auth off, memory is asked only whether the assistant is off: without
                # an answer, messages are answered (as before the switch existed).
                return Grant("owner", user_id)
            # Not stored yet (the first message creates it): the assistant answers.
            granted = (
                Grant("owner", user_id) if conversation is None else Grant.of(user_id, conversation)
            )
        if changes == self._changes:
            self._remember(conversation_id, user_id, granted, now + self._ttl)
        return granted

    async def check(self, user_id: str, conversation_id: str) -> Grant:
        """`grant` for sending into the conversation (creating it if new): 403 for a
        viewer."""
        granted = await self.grant(user_id, conversation_id, create=True)
        if not granted.sends:
            raise forbidden_to_send()
        return granted

    async def _ask(
        self, user_id: str, conversation_id: str, create: bool
    ) -> rpc.ConversationSummary | None:
        if create and self._enabled:
            request = rpc.ConversationCreateRequest(
                user_id=user_id, conversation_id=conversation_id
            )
            created = await answer_of("memory", self._backends.create_conversation(request))
            return created.conversation
        # One message at most: the answer stays small however long the conversation.
        read = await answer_of(
            "memory", self._backends.get_conversation(user_id, conversation_id, limit=1)
        )
        return read.conversation

    def forget(self, conversation_id: str) -> None:
        """The conversation was deleted, or its access changed: ask memory again."""
        self._changes += 1
        self._grants.pop(conversation_id, None)

    def clear(self) -> None:
        """Changes may have been missed (NATS reconnected): ask memory again."""
        self._changes += 1
        self._grants.clear()

    def _remember(self, conversation_id: str, user_id: str, granted: Grant, until: float) -> None:
        if self._size <= 0:
            return
        self._grants.setdefault(conversation_id, {})[user_id] = (granted, until)
        self._grants.move_to_end(conversation_id)
        while len(self._grants) > self._size:
            self._grants.popitem(last=False)
