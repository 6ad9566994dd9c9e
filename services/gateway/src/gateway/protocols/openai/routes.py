"""POST /v1/chat/completions: stateless OpenAI-compatible completions on the same workers.

The conversation is the request's `messages` (gateway.intake.stateless): handed to
the worker as the prompt and not stored in history, like OpenAI's own endpoint.
`tools` and `tool_choice` travel with it; the model's function calls come back as
`tool_call` events, relayed as OpenAI's `tool_calls`, and the caller sends their
results as `role: "tool"` messages. The usage is accounted to the caller as for any
other generation, under a conversation id of its own (`oai-…`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from contracts import ids
from contracts.attachments import AttachmentRef
from contracts.events import GenerationOptions, GenerationRequested
from gateway.access.auth import current_user
from gateway.errors import ApiError
from gateway.intake.attachments import Checked, check_images, from_data_url, store_images
from gateway.intake.body import body_schema, read_model
from gateway.intake.limits import limits_of
from gateway.intake.stateless import start_stateless, stateless_request, stop_stateless
from gateway.openapi import answers, error_responses
from gateway.protocols.direct import EventStreamResponse
from gateway.protocols.openai import model_list
from gateway.protocols.openai.errors import OpenAIRoute
from gateway.protocols.openai.relay import Completion, completion_json, completion_sse
from gateway.protocols.openai.schema import (
    ChatCompletion,
    ChatCompletionRequest,
    OpenAIErrorOut,
    split_prompt,
)
from gateway.protocols.rest.messages import SSE_HEADERS
from gateway.settings import GatewaySettings
from gateway.state import Gateway, gateway_of

__all__ = ["router"]

# Every error of these routes, 401 included, is OpenAI-shaped (OpenAIRoute).
router = APIRouter(route_class=OpenAIRoute)
router.include_router(model_list.router)

CONVERSATION_PREFIX = "oai-"

_ANSWERS = "A `chat.completion`; with `stream`, `chat.completion.chunk` lines as SSE"


def _checked(body: ChatCompletionRequest, settings: GatewaySettings) -> GenerationOptions:
    known = settings.model_table()
    if body.model not in known:
        raise ApiError(
            404,
            "model_not_found",
            f"The model {body.model!r} does not exist; known models: {', '.join(known)}",
        )
    for message in body.messages:
        if len(message.text()) > settings.max_message_chars:
            raise ApiError(
                413,
                "message_too_long",
                f"a message is longer than {settings.max_message_chars} characters",
            )
    return GenerationOptions(
        model=body.model, max_tokens=body.token_limit, temperature=body.temperature
    )


def _request(
    user_id: str, body: ChatCompletionRequest, options: GenerationOptions, *, with_images: bool
) -> GenerationRequested:
    try:
        prompt = split_prompt(body.messages)
    except ValueError as exc:
        raise ApiError(400, "invalid_messages", str(exc)) from None
    try:
        tool_choice = body.choice()
    except ValueError as exc:
        raise ApiError(400, "invalid_tool_choice", str(exc)) from None
    return stateless_request(
        user_id,
        CONVERSATION_PREFIX,
        prompt.history,
        prompt.content,
        options,
        tools=body.tool_specs(),
        tool_choice=tool_choice,
        prompt_in_history=prompt.in_history,
        with_images=with_images,
    )


def _images(
    body: ChatCompletionRequest, settings: GatewaySettings, max_payload: int | None
) -> list[tuple[Checked, ...]]:
    """Each message's images (user messages only), checked before anything is stored."""
    found: list[tuple[Checked, ...]] = []
    for index, message in enumerate(body.messages):
        urls = message.image_urls()
        if urls and message.role != "user":
            raise ApiError(
                400, "invalid_messages", f"messages[{index}]: only user messages carry images"
            )
        images = [from_data_url(url, f"messages[{index}].content") for url in urls]
        field = f"messages[{index}].content images"
        found.append(
            check_images(images, settings, body.model, max_payload=max_payload, field=field)
        )
    return found


async def _with_images(
    gateway: Gateway, generation: GenerationRequested, images: list[tuple[Checked, ...]]
) -> GenerationRequested:
    """The request with its messages' images stored and named (`contracts.attachments`);
    the last message is the prompt unless the history holds it (tool results)."""
    conversation_id, user_id = generation.conversation_id, generation.user_id
    history = list(generation.history or ())
    prompt: tuple[AttachmentRef, ...] = ()
    for index, checked in enumerate(images):
        if not checked:
            continue
        in_history = index < len(history)
        message_id = ids.new_id() if in_history else generation.user_message_id
        refs = await store_images(gateway, user_id, conversation_id, message_id, checked)
        if in_history:
            history[index] = history[index].model_copy(update={"attachments": refs})
        else:
            prompt = refs
    return generation.model_copy(update={"history": tuple(history), "attachments": prompt})


async def _complete(gateway: Gateway, request: Request, user_id: str) -> Response:
    settings = gateway.settings
    body = await read_model(
        request,
        ChatCompletionRequest,
        settings.max_body_bytes,
        media=ChatCompletionRequest.image_bytes,
        media_max=settings.attachments_max_base64,
    )
    options = _checked(body, settings)
    images = _images(body, settings, gateway.nc.max_payload)
    generation = _request(user_id, body, options, with_images=bool(images and images[-1]))
    if any(images):
        generation = await _with_images(gateway, generation, images)
    with gateway.connections.holding(user_id, wanted=body.stream) as slot:  # 429 first
        feed = await start_stateless(gateway, limits_of(request), generation)
    done = Completion(generation.message_id, body.model)
    if body.stream:
        chunks = completion_sse(
            feed, done, include_usage=body.include_usage, ping_seconds=settings.sse_ping_seconds
        )
        return EventStreamResponse(
            _stopped_if_left(gateway, user_id, generation.conversation_id, chunks),
            headers=SSE_HEADERS,
            background=BackgroundTask(feed.close),
            slot=slot,
            send_timeout=settings.ws_send_timeout_seconds,
        )
    try:
        answer = await completion_json(feed, done, timeout=settings.generation_timeout_seconds)
    finally:
        await feed.close()
    return JSONResponse(answer)


async def _stopped_if_left(
    gateway: Gateway, user_id: str, conversation_id: str, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """`chunks`; a client that leaves before the end has its completion stopped."""
    finished = False
    try:
        async for chunk in chunks:
            yield chunk
        finished = True
    finally:
        if not finished:
            stop_stateless(gateway, user_id, conversation_id)


@router.post(
    "/v1/chat/completions",
    openapi_extra=body_schema(ChatCompletionRequest),
    response_model=ChatCompletion,
    responses={
        **answers(streamed=_ANSWERS),
        **error_responses(400, 401, 404, 413, 415, 429, 503, model=OpenAIErrorOut),
    },
)
async def chat_completions(
    request: Request, user_id: Annotated[str, Depends(current_user)]
) -> Response:
    return await _complete(gateway_of(request), request, user_id)
