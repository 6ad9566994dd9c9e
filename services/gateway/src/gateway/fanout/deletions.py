"""Deleted conversations, as memory announces them: every gateway acts on every one.

A deleted id may be anyone's next, so each gateway forgets who owned it and ends
every attachment to it (event feeds, signal groups): their clients get an `error`
(`not_found`) and nothing of a later owner. Not a queue group: every gateway hears
every deletion. Memory announces on core NATS before the delete's reply, so a
message of the id's next owner (sent after that reply) comes after it.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contracts import subjects

__all__ = ["follow_deletions"]


async def follow_deletions(nc: Client, *on_deleted: Callable[[str], None]) -> Subscription:
    """Call each of `on_deleted` with every deleted conversation's id (ends with `nc`)."""

    async def deleted(msg: Msg) -> None:
        # The subject names the conversation: nothing in the body to be wrong about.
        conversation_id = subjects.conversation_of_deleted_subject(msg.subject)
        for forget in on_deleted:
            forget(conversation_id)

    return await nc.subscribe(subjects.CONVERSATION_DELETED_ALL, cb=deleted)
