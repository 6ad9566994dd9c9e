"""Everything a worker publishes, with the right stream and Nats-Msg-Id."""

from __future__ import annotations

from faststream.nats import NatsBroker
from pydantic_core import to_json

from contracts import ids, subjects, topology
from contracts.events import (
    DoneEvent,
    ErrorEvent,
    GenerationFailed,
    GenerationFinished,
    ResyncEvent,
    StartEvent,
    StatusEvent,
    TokenEvent,
    ToolCallEvent,
    Usage,
    UsageReported,
)
from inference.coalescing import PublishTokens
from inference.leader_watch import LeaderWatch
from inference.receipts import AckInbox, Receipts

__all__ = ["BILLED_HEADER", "TOKENS_HEADER", "Outbox"]

# On a `token` event joining several provider tokens: how many (the reply log counts
# them for the usage of a call a crash cut short). No header: one.
TOKENS_HEADER = "Livechat-Tokens"
# On a status event: what the reply's calls were billed so far, `<prompt> <completion>`
# tokens (the reply log carries it to the next delivery, see `generation._Bill`).
BILLED_HEADER = "Livechat-Billed"


class Outbox:
    """What one delivery of a reply publishes (one outbox per delivery)."""

    def __init__(
        self,
        broker: NatsBroker,
        *,
        timeout: float = 5.0,
        leaders: LeaderWatch | None = None,
        acks: AckInbox | None = None,
    ) -> None:
        self._broker = broker
        self._timeout = timeout
        self._leaders = leaders
        # The stream's acks of the events published without waiting (`unconfirmed`),
        # heard on the worker's one subscription for them (`acks`), else on its own.
        self._receipts = Receipts(broker.connection, acks)

    def tokens(self, conversation_id: str, message_id: str) -> PublishTokens:
        """The publisher of one reply's `token` events.

        Core publish: the events stream captures it, and one connection keeps the order;
        its ack is not waited for (`unconfirmed` counts those that did not come).
        Raw, without FastStream's headers: the bytes of the event are all a reader needs.
        This runs once per event: the subject and the event's JSON around its content
        are made once per reply, only the content is serialised per event.
        """
        subject = subjects.events(conversation_id)
        head, tail = _token_json(message_id)
        publish = self._broker.connection.publish
        receipts = self._receipts
        reply_to = receipts.reply_to

        async def send(text: str, count: int) -> None:
            if not receipts.listening:
                await receipts.listen()
            data = head + to_json(text) + tail
            if count == 1:
                await publish(subject, data, reply_to())
            else:
                headers = {TOKENS_HEADER: str(count)}
                await publish(subject, data, reply_to(), headers=headers)

        return send

    async def announce(self, conversation_id: str, event: StartEvent | StatusEvent) -> None:
        """A generation's start, published like a token: raw, without waiting for the ack.

        Waiting for the store's ack of start and then of status held the first token
        back by two round trips; ordered on the one connection, they still come first.
        """
        await self._unacked(conversation_id, event.__pydantic_serializer__.to_json(event))

    async def unconfirmed(self) -> int:
        """How many of the events published without waiting (tokens, start, tool-call
        pieces) the events stream has not acked, the last one's ack waited for up to the
        publish timeout: 0 when it holds them all (see `inference.receipts`)."""
        return await self._receipts.missing(self._timeout)

    async def close(self) -> None:
        """The delivery is over: its events' acks are no longer listened for."""
        await self._receipts.close()

    async def _unacked(self, conversation_id: str, data: bytes) -> None:
        subject = subjects.events(conversation_id)
        await self._receipts.listen()
        await self._broker.connection.publish(subject, data, self._receipts.reply_to())

    def disturbances(self) -> int:
        """How often the connection reconnected (NATS restarted, or its node was lost)
        plus how often the events stream elected a leader (the node leading it was
        lost): after either, some core-published events may not be in the stream."""
        elections = self._leaders.elections() if self._leaders is not None else 0
        return int(self._broker.connection.stats["reconnects"]) + elections

    async def tool_call(self, conversation_id: str, event: ToolCallEvent) -> None:
        """A piece of a function call, published like a token: raw, ordered with them."""
        await self._unacked(conversation_id, event.__pydantic_serializer__.to_json(event))

    async def flush(self) -> None:
        await self._broker.connection.flush(timeout=int(max(self._timeout, 1)))

    async def event(
        self,
        conversation_id: str,
        event: StartEvent | StatusEvent | ResyncEvent | DoneEvent | ErrorEvent,
        *,
        msg_id: str | None = None,
        billed: Usage | None = None,
    ) -> None:
        headers = {}
        if msg_id:
            headers["Nats-Msg-Id"] = msg_id
        if billed is not None:
            headers[BILLED_HEADER] = f"{billed.prompt_tokens} {billed.completion_tokens}"
        await self._broker.publish(
            event,
            subjects.events(conversation_id),
            stream=topology.EVENTS_STREAM,
            headers=headers or None,
            timeout=self._timeout,
        )

    async def terminal(self, conversation_id: str, event: DoneEvent | ErrorEvent) -> None:
        # One msg id for done and error: a generation ends with exactly one of them.
        reply = event.message_id or ""
        await self.event(conversation_id, event, msg_id=ids.msg_id("done", conversation_id, reply))

    async def finished(self, event: GenerationFinished) -> None:
        fin = ids.msg_id("fin", event.conversation_id, event.message_id)
        await self._store(event, subjects.chat_finished(event.conversation_id), fin)

    async def failed(self, event: GenerationFailed) -> None:
        failed = ids.msg_id("failed", event.conversation_id, event.message_id)
        await self._store(event, subjects.chat_failed(event.conversation_id), failed)

    async def usage(self, event: UsageReported) -> None:
        usage = ids.msg_id("usage", event.attempt_id)
        subject = subjects.usage_reported(event.conversation_id, event.message_id)
        await self._store(event, subject, usage, stream=topology.USAGE_STREAM)

    async def _store(
        self,
        event: GenerationFinished | GenerationFailed | UsageReported,
        subject: str,
        msg_id: str,
        *,
        stream: str = topology.CHAT_STREAM,
    ) -> None:
        """Publish to a file stream and wait for its ack; `msg_id` dedupes a repeat."""
        await self._broker.publish(
            event,
            subject,
            stream=stream,
            headers={"Nats-Msg-Id": msg_id},
            timeout=self._timeout,
        )


_CONTENT = "\x00content\x00"


def _token_json(message_id: str) -> tuple[bytes, bytes]:
    """A reply's `token` event as JSON, split where its content goes."""
    event = TokenEvent(message_id=message_id, content=_CONTENT)
    head, tail = event.__pydantic_serializer__.to_json(event).split(to_json(_CONTENT))
    return head, tail
