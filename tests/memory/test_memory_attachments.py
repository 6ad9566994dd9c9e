"""The images of messages in the database (SQLite and PostgreSQL): stored once whatever
the retries, read back in order and byte for byte, gone with their conversation."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

from memory_testing import finished, user_message
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import rpc
from contracts.attachments import AttachmentRef
from memory import SqlConversationRepository
from memory.attachments import SqlAttachmentStore
from memory.history.cache import CachedConversationStore, WindowCache, connect_redis

NOW = datetime(2026, 12, 5, tzinfo=UTC)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
GIF = b"GIF89a" + b"\x00\xff" * 50


def ref(message_id: str, position: int, media_type: str, data: bytes) -> AttachmentRef:
    return AttachmentRef(
        message_id=message_id, position=position, media_type=media_type, size=len(data)
    )


async def test_images_stored_once_read_in_order_and_deleted_with_the_conversation(
    engine: AsyncEngine,
) -> None:
    store = SqlAttachmentStore(engine)
    png, gif = ref("m1", 0, "image/png", PNG), ref("m1", 1, "image/gif", GIF)
    await store.put("alice", "c1", gif, GIF, NOW)
    await store.put("alice", "c1", png, PNG, NOW)
    await store.put("alice", "c1", png, b"\x89PNG\r\n\x1a\nother", NOW)  # a retry: the first stays
    await store.put("alice", "c2", ref("m1", 0, "image/gif", GIF), GIF, NOW)  # same ids, elsewhere

    assert await store.refs("c1", ["m1", "m2"]) == {"m1": (png, gif)}
    found = await store.image("c1", "m1", 0)
    assert found is not None and found.ref == png
    assert base64.b64decode(found.data) == PNG
    assert await store.image("c1", "m1", 2) is None

    await store.delete("c1")
    assert await store.refs("c1", ["m1"]) == {}
    assert await store.image("c1", "m1", 0) is None
    assert (await store.refs("c2", ["m1"]))["m1"][0].media_type == "image/gif"


async def test_the_sweep_forgets_old_images_of_no_stored_conversation(
    engine: AsyncEngine, repository: SqlConversationRepository
) -> None:
    store = SqlAttachmentStore(engine)
    old = NOW - timedelta(days=2)
    await repository.create_conversation(
        rpc.ConversationCreateRequest(user_id="alice", conversation_id="kept"), old
    )
    for conversation_id in ("kept", "oai-stateless"):
        await store.put("alice", conversation_id, ref("m1", 0, "image/png", PNG), PNG, old)
    await store.put("alice", "oai-recent", ref("m1", 0, "image/png", PNG), PNG, NOW)

    assert await store.sweep(NOW - timedelta(days=1)) == 1
    assert await store.image("oai-stateless", "m1", 0) is None
    assert await store.image("kept", "m1", 0) is not None
    assert await store.image("oai-recent", "m1", 0) is not None  # maybe still being answered


async def test_the_history_and_the_conversation_name_the_images_of_their_user_messages(
    engine: AsyncEngine, repository: SqlConversationRepository, redis_url: str
) -> None:
    images = SqlAttachmentStore(engine)
    png, gif = ref("m1", 0, "image/png", PNG), ref("m1", 1, "image/gif", GIF)
    for image, data in ((gif, GIF), (png, PNG)):
        await images.put("alice", "c1", image, data, NOW)
    await images.put("alice", "c2", ref("m2", 0, "image/png", PNG), PNG, NOW)  # elsewhere
    await repository.store_events(
        [
            user_message("c1", "m1", "what is in this picture?", seconds=1),
            finished("c1", "r1", "m1", "a cat", seconds=2),
            user_message("c1", "m2", "and its colour?", seconds=3),
            finished("c1", "r2", "m2", "grey", seconds=4),
        ]
    )
    follow_up = rpc.ContextRequest(
        conversation_id="c1", user_id="alice", reply_id="r3", user_message_id="m3"
    )
    redis = connect_redis(redis_url, timeout=5)
    prefix = f"livechat-test:{uuid.uuid4().hex}:"
    cache = WindowCache(redis, prefix=prefix, ttl_seconds=600, retry_seconds=0.2)
    try:
        # From SQL, and from the cached window (read through, then from Redis).
        cached = CachedConversationStore(repository, cache, window=10)
        for store in (repository, cached, cached):
            context = await store.context(follow_up, 20)
            assert [(m.id, m.attachments) for m in context.messages] == [
                ("m1", (png, gif)),
                ("r1", ()),
                ("m2", ()),
                ("r2", ()),
            ]
            reply = await store.get_conversation(
                rpc.ConversationGetRequest(user_id="alice", conversation_id="c1")
            )
            assert [m.attachments for m in reply.messages] == [(png, gif), (), (), ()]
    finally:
        keys = [key async for key in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
