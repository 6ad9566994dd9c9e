"""The images of a prompt, read from memory just before the provider call.

The work request and the context name them (`contracts.attachments.AttachmentRef`);
their bytes are asked for one by one (each fits a NATS message, several may not) and
put in the prompt's messages (`ContextMessage.images`), in this process only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from fnmatch import fnmatchcase

from faststream.nats import NatsBroker

from contracts import subjects
from contracts.attachments import AttachmentRef, Image
from contracts.events import ContextMessage
from contracts.rpc import AttachmentGetReply, AttachmentGetRequest
from inference.providers.model_routes import Route

__all__ = ["ImagesMissing", "message_images", "seeing_images", "with_images"]

# The most images a regenerated message may have (the gateway's limit is lower).
_MOST_PER_MESSAGE = 16


class ImagesMissing(Exception):
    """Memory did not answer."""


async def _image(
    broker: NatsBroker, conversation_id: str, message_id: str, position: int, timeout: float
) -> Image | None:
    ask = AttachmentGetRequest(
        conversation_id=conversation_id, message_id=message_id, position=position
    )
    answer = await broker.request(ask, subjects.MEMORY_ATTACHMENT_GET, timeout=timeout)
    found = AttachmentGetReply.model_validate_json(answer.body).image
    return None if found is None else Image(media_type=found.ref.media_type, data=found.data)


async def with_images(
    broker: NatsBroker,
    conversation_id: str,
    messages: Sequence[ContextMessage],
    *,
    timeout: float,
    most: int,
) -> tuple[ContextMessage, ...]:
    """`messages`, those that name images given their bytes: the newest `most` images
    (providers take a few per request: Groq five), older ones left out. Raises
    `ImagesMissing` when memory does not answer."""
    refs = [ref for m in messages for ref in m.attachments][-most:] if most > 0 else []
    if not refs:
        return tuple(
            m.model_copy(update={"attachments": ()}) if m.attachments else m for m in messages
        )
    try:
        found = await asyncio.gather(
            *(_image(broker, conversation_id, r.message_id, r.position, timeout) for r in refs)
        )
    except Exception as exc:
        raise ImagesMissing(type(exc).__name__) from exc
    # One no longer stored (its conversation was deleted) is left out.
    images = {(r.message_id, r.position): i for r, i in zip(refs, found, strict=True)}

    def given(m: ContextMessage) -> ContextMessage:
        kept = (images.get((r.message_id, r.position)) for r in m.attachments)
        return m.model_copy(update={"images": tuple(i for i in kept if i is not None)})

    return tuple(given(m) if m.attachments else m for m in messages)


async def message_images(
    broker: NatsBroker, conversation_id: str, message_id: str, *, timeout: float
) -> tuple[AttachmentRef, ...]:
    """The images a stored message has (a regenerated answer names none): asked in
    order until one is missing."""
    refs: list[AttachmentRef] = []
    try:
        for position in range(_MOST_PER_MESSAGE):
            image = await _image(broker, conversation_id, message_id, position, timeout)
            if image is None:
                break
            refs.append(
                AttachmentRef(
                    message_id=message_id,
                    position=position,
                    media_type=image.media_type,
                    size=len(image.data) * 3 // 4,
                )
            )
    except Exception as exc:
        raise ImagesMissing(type(exc).__name__) from exc
    return tuple(refs)


def seeing_images(routes: Sequence[Route], vision_models: Sequence[str]) -> tuple[Route, ...]:
    """The routes whose model sees images (`vision_models`: shell patterns of model ids)."""
    return tuple(r for r in routes if any(fnmatchcase(r.model, p) for p in vision_models))
