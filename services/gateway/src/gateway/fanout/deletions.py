"""Deleted conversations, as memory announces them: every gateway acts on every one.

A deleted id may be anyone's next, so each gateway forgets who owned it and ends
every attachment to it (event feeds, signal groups): their clients get an `error`
(`not_found`) and nothing of a later owner. Not a queue group: every gateway hears
every deletion. Memory announces on core NATS before the delete's reply, so a
message of the id's next owner (sent after that reply) comes after it.

A gateway cut off from NATS may have missed announcements: when it is back, every
attached user's access is asked of memory again (`recheck_followers`) before the
hub relays what it missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from contracts import subjects
from gateway.access.auth import LOCAL_USER
from gateway.backends import Backends, BackendUnavailable
from gateway.fanout.hub import EventHub

__all__ = ["follow_deletions", "recheck_followers"]

log = logging.getLogger(__name__)


async def follow_deletions(nc: Client, *on_deleted: Callable[[str], None]) -> Subscription:
    """Call each of `on_deleted` with every deleted conversation's id (ends with `nc`)."""

    async def deleted(msg: Msg) -> None:
        # The subject names the conversation: nothing in the body to be wrong about.
        conversation_id = subjects.conversation_of_deleted_subject(msg.subject)
        for forget in on_deleted:
            forget(conversation_id)

    return await nc.subscribe(subjects.CONVERSATION_DELETED_ALL, cb=deleted)


async def recheck_followers(hub: EventHub, backends: Backends) -> None:
    """End the attachments of users memory no longer shows their conversation to
    (deleted while this gateway was cut off, perhaps someone else's by now). Auth off,
    every caller is the one local user: nothing to check. Memory silent: kept."""
    ended = 0
    for conversation_id, user_id in hub.followers():
        if user_id == LOCAL_USER:
            continue
        try:
            reply = await backends.get_conversation(user_id, conversation_id, limit=1)
        except BackendUnavailable:
            continue
        if reply.conversation is None:
            hub.end_for(conversation_id, user_id)
            ended += 1
    if ended:
        log.info("ended %d attachments to conversations deleted while disconnected", ended)
