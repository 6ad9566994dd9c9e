"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from prometheus_client import CONTENT_TYPE_LATEST

from contracts import topology
from gateway.backends import BACKEND_SERVICES
from gateway.errors import ApiError, error_body
from gateway.openapi import error_responses
from gateway.schemas import HealthOut, NotReadyOut, ReadyOut
from gateway.settings import GatewaySettings
from gateway.state import gateway_of

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz")
async def healthz() -> HealthOut:
    return HealthOut(status="ok")


async def _events_stream(js: JetStreamContext) -> bool:
    # A restarted nats-server loses the memory stream until the services recreate it.
    try:
        await js.stream_info(topology.EVENTS_STREAM)
    except (NatsError, TimeoutError):
        return False
    return True


@router.get(
    "/readyz",
    response_model=ReadyOut,
    responses={503: {"model": NotReadyOut, "description": "something checked did not answer"}},
)
async def readyz(request: Request) -> JSONResponse:
    gateway = gateway_of(request)
    if not gateway.nc.is_connected or not gateway.hub.running:
        body = error_body("not_ready", "not connected to NATS")
        body["checks"] = {"nats": False}
        return JSONResponse(body, status_code=503)
    events, *answers = await asyncio.gather(
        _events_stream(gateway.js), *(gateway.backends.ping(s) for s in BACKEND_SERVICES)
    )
    checks = {
        "nats": True,
        "events_stream": events,
        **dict(zip(BACKEND_SERVICES, answers, strict=True)),
    }
    failed = [name for name, ok in checks.items() if not ok]
    if failed:
        body = error_body("not_ready", f"not answering: {', '.join(failed)}")
        body["checks"] = checks
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})


def _check_metrics_access(request: Request, settings: GatewaySettings) -> None:
    """Open while auth is off; with auth on only with LIVECHAT_METRICS_TOKEN; never here
    when they are served on a port of their own."""
    if settings.metrics_port:
        raise ApiError(404, "not_found", "metrics are served on LIVECHAT_METRICS_PORT")
    if not settings.auth_enabled:
        return
    if settings.metrics_token is None:
        raise ApiError(
            404,
            "not_found",
            "with auth on, metrics are served with LIVECHAT_METRICS_TOKEN or on "
            "LIVECHAT_METRICS_PORT",
        )
    expected = f"Bearer {settings.metrics_token.get_secret_value()}".encode()
    given = request.headers.get("authorization", "").encode()
    if not hmac.compare_digest(given, expected):
        raise ApiError(
            401,
            "unauthorized",
            "metrics need Authorization: Bearer <LIVECHAT_METRICS_TOKEN>",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **error_responses(401, 404),
    },
)
async def metrics(request: Request) -> Response:
    gateway = gateway_of(request)
    _check_metrics_access(request, gateway.settings)
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)
