"""The images of a message: checked (count, size, base64, kind, a model that sees them)
before anything is stored or published, then stored in memory, named by reference in
the events (why: `contracts.attachments`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from contracts import rpc
from contracts.attachments import IMAGE_MEDIA_TYPES, AttachmentRef, image_media_type
from gateway.backends import answer_of
from gateway.errors import ApiError
from gateway.schemas import public
from gateway.settings import GatewaySettings
from gateway.state import Gateway

__all__ = [
    "Checked",
    "ImageIn",
    "check_image_model",
    "check_images",
    "from_data_url",
    "store_images",
    "with_images",
]

# A NATS message holds one image in base64 with its request around it.
_RPC_ROOM = 4096


@dataclass(frozen=True, slots=True)
class ImageIn:
    """An image as a protocol received it (REST/WS `attachments`, a data URL)."""

    media_type: str
    data: str  # base64


@dataclass(frozen=True, slots=True)
class Checked:
    """An image that passed the checks."""

    media_type: str
    data: str  # base64, as received
    size: int  # bytes, decoded


def from_data_url(url: str, where: str) -> ImageIn:
    """An image given as a `data:<media type>;base64,<data>` URL (OpenAI `image_url`,
    AI SDK file parts). A remote URL is refused (400): nothing is fetched."""
    scheme = url[:5].lower()
    if scheme != "data:":
        raise ApiError(
            400,
            "unsupported_attachment_url",
            f"{where}: only data: URLs are accepted (data:image/png;base64,...); "
            "remote images are not fetched",
        )
    header, comma, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding.lower() != "base64":
        raise ApiError(
            422, "invalid_attachment", f"{where}: a data URL must be base64 (data:<type>;base64,…)"
        )
    media_type = media_type.strip().lower()
    if media_type not in IMAGE_MEDIA_TYPES:
        raise ApiError(
            422,
            "invalid_attachment",
            f"{where}: media type {media_type!r} is not one of {', '.join(IMAGE_MEDIA_TYPES)}",
        )
    return ImageIn(media_type, data)


def _limit(settings: GatewaySettings, max_payload: int | None) -> int:
    """The largest image accepted: the setting, and what one NATS message carries."""
    limit = settings.attachment_max_bytes
    if max_payload:
        limit = min(limit, (max_payload - _RPC_ROOM) // 4 * 3)
    return limit


def check_image_model(model: str, settings: GatewaySettings) -> None:
    if model not in settings.image_models:
        seeing = ", ".join(m for m in settings.image_models if m in settings.model_table())
        raise ApiError(
            400,
            "unsupported_attachment",
            f"model {model!r} cannot see images; models that can: {seeing or 'none'}",
        )


def check_images(
    images: Sequence[ImageIn],
    settings: GatewaySettings,
    model: str,
    *,
    max_payload: int | None = None,
    field: str = "attachments",
) -> tuple[Checked, ...]:
    """The model that is to see them (400 `unsupported_attachment`), then the images in
    order (count 422, each's size 413, base64 and kind 422); `field` names them."""
    if not images:
        return ()
    check_image_model(model, settings)
    most = settings.attachments_max_count
    if len(images) > most:
        raise ApiError(422, "too_many_attachments", f"a message may carry at most {most} images")
    limit = _limit(settings, max_payload)
    checked: list[Checked] = []
    for index, image in enumerate(images):
        where = f"{field}[{index}]"
        # Sized before decoding: a huge string is refused without decoding it.
        if len(image.data) // 4 * 3 > limit + 2:
            raise _too_large(where, limit)
        try:
            data = base64.b64decode(image.data, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                422, "invalid_attachment", f"{where}: data is not valid base64"
            ) from None
        if len(data) > limit:
            raise _too_large(where, limit)
        kind = image_media_type(data)
        if kind is None or kind != image.media_type:
            raise ApiError(
                422,
                "invalid_attachment",
                f"{where}: the bytes are not a {image.media_type} image",
            )
        checked.append(Checked(image.media_type, image.data, len(data)))
    return tuple(checked)


def _too_large(where: str, limit: int) -> ApiError:
    return ApiError(
        413, "attachment_too_large", f"{where}: an image may have at most {limit} bytes"
    )


async def store_images(
    gateway: Gateway,
    user_id: str,
    conversation_id: str,
    message_id: str,
    images: Sequence[Checked],
) -> tuple[AttachmentRef, ...]:
    """Store a message's images in memory (idempotent), before the message is published."""
    if not images:
        return ()
    requests = [
        rpc.AttachmentPutRequest(
            user_id=user_id,
            conversation_id=conversation_id,
            message_id=message_id,
            position=position,
            media_type=image.media_type,
            data=image.data,
        )
        for position, image in enumerate(images)
    ]
    replies = await answer_of(
        "memory", asyncio.gather(*(gateway.backends.put_attachment(r) for r in requests))
    )
    return tuple(reply.ref for reply in replies)


async def with_images(
    gateway: Gateway, conversation_id: str, messages: Sequence[rpc.StoredMessage]
) -> list[dict[str, Any]]:
    """Messages as clients see them, each image's bytes read from memory (one request
    per image: each fits a NATS message, several may not)."""
    refs = [ref for message in messages for ref in message.attachments]
    found = await answer_of(
        "memory",
        asyncio.gather(
            *(gateway.backends.attachment(conversation_id, r.message_id, r.position) for r in refs)
        ),
    )
    data = {(r.message_id, r.position): reply.image for r, reply in zip(refs, found, strict=True)}
    shown: list[dict[str, Any]] = []
    for message in messages:
        item = {**public(message), "parent_id": message.parent_id}  # null: a first message
        if message.attachments:
            images = (data.get((r.message_id, r.position)) for r in message.attachments)
            item["attachments"] = [
                {"type": "image", "media_type": i.ref.media_type, "data": i.data}
                for i in images
                if i is not None
            ]
        shown.append(item)
    return shown
