"""Changes of who may do what in a conversation, as the gateway that made one announces
it: every gateway acts on every one.

A member added, changed or removed, or the assistant switched off or on, is committed by
memory; then the gateway that asked announces it on core NATS (`AccessChanged`). Every
gateway (that one included) forgets what it remembered of the conversation's access, so
the next request is checked against memory, and ends the attachments of a removed member
(event feeds, signal groups): their clients get an `error` (`not_found`), as after a
deletion. A gateway that misses an announcement (cut off from NATS) forgets every grant
when it is back; a dropped one is bounded by the grants' time to live.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from pydantic import ValidationError

from contracts import subjects
from contracts.events import AccessChanged

__all__ = ["announce_access_change", "follow_access_changes"]

log = logging.getLogger(__name__)


async def announce_access_change(
    nc: Client, conversation_id: str, removed: str | None = None
) -> None:
    """Tell every gateway; a NATS that does not take it is logged (the grants' time to
    live bounds what is left)."""
    change = AccessChanged(conversation_id=conversation_id, removed=removed)
    try:
        await nc.publish(
            subjects.access_changed(conversation_id), change.model_dump_json().encode()
        )
    except NatsError as exc:
        log.warning("announcing an access change failed: %s", type(exc).__name__)


async def follow_access_changes(
    nc: Client,
    forget: Callable[[str], None],
    *end_for: Callable[[str, str], None],
) -> Subscription:
    """Call `forget` with every changed conversation's id, and each of `end_for` with it
    and a removed member (ends with `nc`)."""

    async def changed(msg: Msg) -> None:
        conversation_id = subjects.conversation_of_access_subject(msg.subject)
        forget(conversation_id)
        try:
            change = AccessChanged.model_validate_json(msg.data)
        except ValidationError:
            log.warning("unreadable access change of a conversation")
            return
        if change.removed is not None and change.conversation_id == conversation_id:
            for end in end_for:
                end(conversation_id, change.removed)

    return await nc.subscribe(subjects.ACCESS_CHANGED_ALL, cb=changed)
