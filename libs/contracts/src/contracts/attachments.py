"""Images in messages: the kinds accepted, and how the services name and pass them.

The bytes are stored first (by memory, over request-reply, one image per request) and
the chat, work and conversation events name them by `AttachmentRef`: the events stay a
few hundred bytes whatever the images weigh. Carrying them in the events would put
megabytes in three streams (the echo in LIVECHAT_EVENTS, replayed to every client, the
user message in LIVECHAT_CHAT, the request in LIVECHAT_WORK) and push one message of
several images past NATS's max_payload (1 MiB by default; 8 MB in deploy/nats). The
worker reads the bytes from memory when it prompts the model (`Image`, in process only).
"""

from __future__ import annotations

from typing import Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "IMAGE_MEDIA_TYPES",
    "AttachmentRef",
    "Image",
    "ImageMediaType",
    "StoredImage",
    "image_media_type",
]

ImageMediaType: TypeAlias = Literal["image/png", "image/jpeg", "image/webp", "image/gif"]
IMAGE_MEDIA_TYPES: tuple[str, ...] = get_args(ImageMediaType)

# The first bytes of each kind (WebP: "RIFF", 4 bytes of size, then "WEBP").
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


def image_media_type(data: bytes) -> str | None:
    """The kind of image `data` is, told by its magic number (None: none accepted)."""
    for media_type, prefixes in _MAGIC.items():
        if data.startswith(prefixes):
            return media_type
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class AttachmentRef(BaseModel):
    """A stored image of a message, named in events instead of its bytes: the
    `position`-th image of message `message_id`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str
    position: int = Field(ge=0)
    media_type: ImageMediaType
    size: int = Field(ge=0)  # bytes, decoded


class Image(BaseModel):
    """An image with its bytes (base64), as a provider is given it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    media_type: ImageMediaType
    data: str  # base64


class StoredImage(BaseModel):
    """An image as memory holds it: its name and its bytes (base64)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: AttachmentRef
    data: str
