"""Who may send into a conversation: its owner; an id nobody holds becomes the caller's.

Asked of memory (an idempotent create) before a message is published, then remembered
per gateway process so later messages skip the round trip. A deleted conversation is
forgotten at once: through this gateway by its delete route, elsewhere (another
gateway, retention) when memory announces it (`gateway.fanout.deletions`). A gateway that was
disconnected may have missed announcements: it forgets every owner when it is back
(`clear`). `ttl_seconds` bounds what is left (an announcement dropped on the way).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from contracts import rpc
from gateway.backends import Backends, answer_of, found

__all__ = ["Ownership"]


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
        # Off with auth off: every caller is the one local user, nothing to check.
        self._enabled = enabled
        self._size = size
        self._ttl = ttl_seconds
        self._clock = clock
        # conversation id -> (its owner, trusted until); least recently used first.
        self._owners: OrderedDict[str, tuple[str, float]] = OrderedDict()
        # Bumped by every `forget` and `clear`: an answer asked for before is not kept.
        self._deletions = 0

    async def check(self, user_id: str, conversation_id: str) -> None:
        """Return when `user_id` may send into the conversation (creating it if new);
        404 for another user's, 503 when memory does not answer."""
        if not self._enabled:
            return
        now = self._clock()
        known = self._owners.get(conversation_id)
        if known is not None and known[0] == user_id and known[1] > now:
            self._owners.move_to_end(conversation_id)
            return
        deletions = self._deletions
        request = rpc.ConversationCreateRequest(user_id=user_id, conversation_id=conversation_id)
        reply = await answer_of("memory", self._backends.create_conversation(request))
        found(reply.conversation)
        if deletions == self._deletions:
            self._remember(conversation_id, user_id, now + self._ttl)

    def forget(self, conversation_id: str) -> None:
        """The conversation was deleted: its id may be anyone's next."""
        self._deletions += 1
        self._owners.pop(conversation_id, None)

    def clear(self) -> None:
        """Deletions may have been missed (NATS reconnected): ask memory again."""
        self._deletions += 1
        self._owners.clear()

    def _remember(self, conversation_id: str, user_id: str, until: float) -> None:
        if self._size <= 0:
            return
        self._owners[conversation_id] = (user_id, until)
        self._owners.move_to_end(conversation_id)
        while len(self._owners) > self._size:
            self._owners.popitem(last=False)
