"""Chaos clients: each holds conversations over SSE or WebSocket and sends all the time.

A client never gives up on a message it sent: a refusal that a retry may fix (429,
5xx, a dropped connection before the answer) sends it again with the same id (the
API makes that safe); a stream cut after some of the reply resumes after the last
event seen (`Last-Event-ID`, or a WebSocket `subscribe` with `last_event_id`). Now
and then it presses stop in the middle of a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from bench.chaos.record import Exchange

__all__ = ["ChatClient"]

# Statuses and frame error codes a client retries (the same message id).
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRY_CODES = frozenset({"rate_limited", "service_unavailable", "relay_failed", "internal_error"})
_TRANSPORT_ERRORS = (httpx.HTTPError, OSError, WebSocketException, asyncio.TimeoutError)


class ChatClient:
    """Holds `conversations` conversations over `transport` ("sse" or "ws") and sends one
    message after the other in each until `stop_at` (time.monotonic()), or `messages`
    in each when given."""

    def __init__(
        self,
        base_url: str,
        transport: str,
        conversations: int,
        *,
        stop_at: float,
        stop_probability: float = 0.05,
        reply_timeout: float = 180.0,
        seed: int | None = None,
        messages: int | None = None,
    ) -> None:
        self.base_url = base_url
        self.ws_url = base_url.replace("http://", "ws://", 1) + "/v1/ws"
        self.transport = transport
        self.conversation_ids = [f"chaos-{uuid.uuid4().hex[:12]}" for _ in range(conversations)]
        self.stop_at = stop_at
        self.stop_probability = stop_probability
        self.reply_timeout = reply_timeout
        self.messages = messages
        self.exchanges: list[Exchange] = []
        self._random = random.Random(seed)

    async def run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as http:
            await asyncio.gather(*(self._converse(http, c) for c in self.conversation_ids))

    async def _converse(self, http: httpx.AsyncClient, conversation_id: str) -> None:
        number = 0
        while time.monotonic() < self.stop_at and number != self.messages:
            number += 1
            exchange = Exchange(conversation_id, uuid.uuid4().hex, self.transport)
            exchange.sent_at = time.monotonic()
            self.exchanges.append(exchange)
            stop = self._random.random() < self.stop_probability
            content = f"message {number}: tell me about rivers and {uuid.uuid4().hex[:6]}"
            deliver = self._sse if self.transport == "sse" else self._ws
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.reply_timeout):
                    await deliver(http, exchange, content, stop)

    async def _pause(self, attempt: int) -> None:
        await asyncio.sleep(min(0.2 * 2 ** min(attempt, 5), 5.0) * (0.5 + self._random.random()))

    # --- SSE -------------------------------------------------------------------------

    async def _sse(self, http: httpx.AsyncClient, ex: Exchange, content: str, stop: bool) -> None:
        body = {"content": content, "id": ex.message_id}
        attempt = 0
        send = True
        while not ex.finished:
            attempt += 1
            try:
                if send or ex.last_event_id is None:
                    ex.note_send()
                    stream = self._post(http, ex, body)
                else:
                    ex.note_resume()
                    stream = self._attach(http, ex)
                send = False
                async for event in stream:
                    ex.take(event)
                    if stop and event["type"] == "token" and not ex.stopped:
                        ex.stopped = True
                        await self._press_stop(http, ex.conversation_id)
                    if ex.finished:
                        return
                send = False  # cut off: resume after the last event seen
            except _Resend:
                send = True
                ex.last_problem = "attach: 204"
            except (_Retry, *_TRANSPORT_ERRORS) as error:
                send = send or ex.last_event_id is None
                ex.last_problem = ex.last_problem if isinstance(error, _Retry) else repr(error)
                ex.note(type(error).__name__)
            if not ex.finished:
                await self._pause(attempt)

    async def _post(
        self, http: httpx.AsyncClient, ex: Exchange, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        path = f"/v1/conversations/{ex.conversation_id}/messages"
        async with aconnect_sse(http, "POST", path, json=body, timeout=60) as source:
            await self._check(source.response, ex)
            ex.accepted = True
            async for sse in source.aiter_sse():
                if sse.data:
                    yield json.loads(sse.data)

    async def _attach(self, http: httpx.AsyncClient, ex: Exchange) -> AsyncIterator[dict[str, Any]]:
        path = f"/v1/conversations/{ex.conversation_id}/events"
        headers = {"Last-Event-ID": str(ex.last_event_id)}
        async with aconnect_sse(http, "GET", path, headers=headers, timeout=60) as source:
            if source.response.status_code == 204:
                # Nothing newer buffered and nothing running: sending the message again
                # (same id) answers with its reply, whatever became of it.
                raise _Resend
            await self._check(source.response, ex)
            async for sse in source.aiter_sse():
                if sse.data:
                    yield json.loads(sse.data)

    async def _check(self, response: httpx.Response, ex: Exchange) -> None:
        if response.status_code == 200:
            return
        await response.aread()
        ex.last_problem = (
            f"{response.request.method} {response.status_code} {_error_code(response)}"
        )
        if response.status_code in _RETRY_STATUS:
            raise _Retry
        ex.refused = ex.last_problem
        raise _Retry

    async def _press_stop(self, http: httpx.AsyncClient, conversation_id: str) -> None:
        with contextlib.suppress(*_TRANSPORT_ERRORS):
            await http.post(f"/v1/conversations/{conversation_id}/cancel")

    # --- WebSocket ---------------------------------------------------------------------

    async def _ws(self, http: httpx.AsyncClient, ex: Exchange, content: str, stop: bool) -> None:
        frame = {"type": "message", "conversation_id": ex.conversation_id}
        frame |= {"content": content, "id": ex.message_id}
        attempt = 0
        send = True
        while not ex.finished:
            attempt += 1
            try:
                async with connect(self.ws_url, open_timeout=30, close_timeout=2) as ws:
                    if send or ex.last_event_id is None:
                        ex.note_send()
                        await ws.send(json.dumps(frame))
                    else:
                        ex.note_resume()
                        subscribe = {"type": "subscribe", "conversation_id": ex.conversation_id}
                        await ws.send(json.dumps({**subscribe, "last_event_id": ex.last_event_id}))
                    send = False
                    while not ex.finished:
                        # Silence this long: resubscribe (a reply never goes that quiet).
                        async with asyncio.timeout(30):
                            event = json.loads(await ws.recv())
                        if event.get("type") == "error" and "event_id" not in event:
                            ex.last_problem = f"ws frame error {event.get('code')}"
                            ex.note(f"frame-error:{event.get('code')}")
                            # Refused for good only when no retry may fix it (a reply
                            # limit, e.g. too_many_in_flight, frees with time).
                            if not event.get("retryable") and event.get("code") not in _RETRY_CODES:
                                ex.refused = f"ws {event.get('code')}"
                            send = True  # the message may not be queued: again, same id
                            raise _Retry
                        ex.take(event)
                        if stop and event.get("type") == "token" and not ex.stopped:
                            ex.stopped = True
                            cancel = {"type": "cancel", "conversation_id": ex.conversation_id}
                            await ws.send(json.dumps(cancel))
            except _Retry:
                pass
            except _TRANSPORT_ERRORS as error:
                ex.note(type(error).__name__)
            if not ex.finished:
                await self._pause(attempt)


class _Retry(Exception):
    """The message must be sent again (or the stream resumed)."""


class _Resend(_Retry):
    pass


def _error_code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(response.json()["error"]["code"])
    return "unknown"
