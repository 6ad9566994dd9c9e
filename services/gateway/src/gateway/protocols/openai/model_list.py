"""GET /v1/models and /v1/models/{model_id}: the model aliases in OpenAI's shape.

What OpenAI clients (the `openai` SDK's `models.list()`, Open WebUI, LibreChat,
Continue) ask for before anything else. The ids are the aliases in force
(`GatewaySettings.model_table()`: the defaults with LIVECHAT_MODEL_ALIASES merged
over them), the names `model` takes in /v1/chat/completions.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from gateway.access.auth import current_user
from gateway.errors import ApiError
from gateway.openapi import error_responses
from gateway.protocols.openai.errors import OpenAIRoute
from gateway.protocols.openai.schema import OpenAIErrorOut
from gateway.settings import GatewaySettings
from gateway.state import gateway_of

__all__ = ["ModelList", "ModelOut", "router"]

router = APIRouter(route_class=OpenAIRoute)

OWNED_BY = "livechat"
# OpenAI's `created` is when a model was made; an alias has no such date, so it is when
# this gateway started (the same for every alias, stable while it runs).
_STARTED = int(time.time())


class ModelOut(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelOut]


def _model(alias: str) -> ModelOut:
    return ModelOut(id=alias, object="model", created=_STARTED, owned_by=OWNED_BY)


def _aliases(request: Request) -> list[str]:
    settings: GatewaySettings = gateway_of(request).settings
    return list(settings.model_table())


_ERRORS = error_responses(401, 503, model=OpenAIErrorOut)


@router.get("/v1/models", response_model=ModelList, responses=_ERRORS)
async def list_models(request: Request, _user: Annotated[str, Depends(current_user)]) -> ModelList:
    return ModelList(object="list", data=[_model(alias) for alias in _aliases(request)])


@router.get(
    "/v1/models/{model_id}",
    response_model=ModelOut,
    # 422 only replaces FastAPI's default schema: a string id always validates.
    responses={**_ERRORS, **error_responses(404, 422, model=OpenAIErrorOut)},
)
async def retrieve_model(
    model_id: str, request: Request, _user: Annotated[str, Depends(current_user)]
) -> ModelOut:
    known = _aliases(request)
    if model_id not in known:
        raise ApiError(
            404,
            "model_not_found",
            f"The model {model_id!r} does not exist; known models: {', '.join(known)}",
        )
    return _model(model_id)
