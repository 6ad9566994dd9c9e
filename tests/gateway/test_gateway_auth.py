"""Auth (docs/api.md): bearer JWTs (HS256 pinned, `exp` required, `iss`/`aud` checked) and API
keys, on every /v1 and /api route and at the WebSocket handshake, with a real server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import websockets
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.requests import Request
from starlette.routing import BaseRoute
from websockets.exceptions import ConnectionClosed, InvalidStatus

from devstack.ports import free_port
from gateway import GatewaySettings
from gateway.access.auth import LOCAL_USER, Authenticator, Unauthorized, current_user
from gateway.access.issue_jwt import issue_token
from gateway.app import create_app

SECRET = "test-secret-of-thirty-two-bytes-or-more"
ISSUER = "https://auth.example.test"
AUDIENCE = "livechat"
API_KEY = "lc_key_bob_0123456789"


@pytest.fixture
def settings(nats_url: str) -> GatewaySettings:
    """The gateway of these tests has auth on: a JWT secret, issuer, audience and a key."""
    return GatewaySettings(
        nats_url=nats_url,
        http_port=free_port(),
        rpc_timeout_seconds=5.0,
        generation_timeout_seconds=20.0,
        sse_ping_seconds=0.5,
        jwt_secret=SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        api_keys={API_KEY: "bob"},
    )


def token(sub: str = "alice", **claims: Any) -> str:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "sub": sub,
        "iat": now,
        "exp": now + timedelta(hours=1),
        "iss": ISSUER,
        "aud": AUDIENCE,
    }
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    key = body.pop("_key", SECRET)
    return jwt.encode(body, key, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def forged(alg: str, signature: str = "") -> str:
    """A token whose header names another algorithm (alg confusion, `none`)."""
    exp = int(time.time()) + 3600
    claims = {"sub": "alice", "exp": exp, "iss": ISSUER, "aud": AUDIENCE}
    return f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(claims)}.{signature}"


def assert_unauthorized(reply: httpx.Response) -> None:
    assert reply.status_code == 401, (reply.request.url, reply.text)
    body = reply.json()
    assert body["error"]["code"] == "unauthorized" and body["error"]["message"]
    assert reply.headers["www-authenticate"].startswith("Bearer")


# --- the claims, decided by the Authenticator (no server needed) -----------------------


def _conn(headers: dict[str, str] | None = None, query: str = "", method: str = "GET") -> Request:
    scope = {
        "type": "http",
        "method": method,
        "path": "/v1/conversations",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    return Request(scope)


@pytest.fixture
def authenticator() -> Authenticator:
    return Authenticator(
        GatewaySettings(
            jwt_secret=SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_leeway_seconds=0
        )
    )


def test_a_valid_token_names_its_subject(authenticator: Authenticator) -> None:
    assert authenticator.authenticate(_conn(bearer(token("alice")))) == "alice"
    # The scheme is case-insensitive (RFC 7235).
    assert authenticator.authenticate(_conn({"Authorization": f"bearer {token()}"})) == "alice"


@pytest.mark.parametrize(
    ("credential", "why"),
    [
        (token(exp=datetime.now(UTC) - timedelta(minutes=5)), "expired"),
        (token(exp=None), "no exp"),
        (token(sub=None), "no sub"),
        (token(sub=""), "empty sub"),
        (token(sub=123), "non-string sub"),
        (token(sub="local"), "the auth-off user"),
        (token(sub="x" * 257), "overlong sub"),
        (token(_key="another-secret-of-thirty-two-bytes!!"), "wrong secret"),
        (token(iss="https://evil.example"), "wrong issuer"),
        (token(iss=None), "no issuer"),
        (token(aud="someone-else"), "wrong audience"),
        (token(aud=None), "no audience"),
        (token(nbf=datetime.now(UTC) + timedelta(hours=1)), "not yet valid"),
        (forged("none"), "alg none"),
        (forged("RS256", "c2lnbmF0dXJl"), "alg RS256"),
        (forged("HS512", "c2lnbmF0dXJl"), "another HMAC"),
        ("not-a-jwt", "garbage"),
    ],
)
def test_bad_tokens_are_refused(authenticator: Authenticator, credential: str, why: str) -> None:
    with pytest.raises(Unauthorized) as refused:
        authenticator.authenticate(_conn(bearer(credential)))
    assert refused.value.status == 401, why
    assert 'error="invalid_token"' in refused.value.headers["WWW-Authenticate"]


def test_no_credentials_or_another_scheme_is_refused(authenticator: Authenticator) -> None:
    with pytest.raises(Unauthorized) as missing:
        authenticator.authenticate(_conn())
    assert missing.value.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(Unauthorized):
        authenticator.authenticate(_conn({"Authorization": "Basic YWxpY2U6c2VjcmV0"}))


def test_access_token_query_only_where_a_browser_cannot_send_headers(
    authenticator: Authenticator,
) -> None:
    query = f"access_token={token('alice')}"
    assert authenticator.authenticate(_conn(query=query)) == "alice"  # EventSource: GET
    with pytest.raises(Unauthorized):
        authenticator.authenticate(_conn(query=query, method="POST"))


def test_issuer_and_audience_are_checked_only_when_configured() -> None:
    plain = Authenticator(GatewaySettings(jwt_secret=SECRET))
    anything = token("carol", iss="https://whoever.example", aud="whatever")
    assert plain.authenticate(_conn(bearer(anything))) == "carol"
    assert plain.authenticate(_conn(bearer(token("carol", iss=None, aud=None)))) == "carol"


def test_without_secret_or_keys_every_caller_is_local() -> None:
    off = Authenticator(GatewaySettings(jwt_secret=""))  # compose's `${...:-}` when unset
    assert off.authenticate(_conn()) == LOCAL_USER
    assert off.authenticate(_conn(bearer("anything"))) == LOCAL_USER


def test_api_keys_alone_turn_auth_on_and_jwts_then_fail() -> None:
    keys_only = Authenticator(GatewaySettings(api_keys="k-one:dave, k-two:erin"))
    assert keys_only.authenticate(_conn(bearer("k-one"))) == "dave"
    assert keys_only.authenticate(_conn({"X-API-Key": "k-two"})) == "erin"
    for refused in (_conn(), _conn(bearer(token())), _conn({"X-API-Key": "k-three"})):
        with pytest.raises(Unauthorized):
            keys_only.authenticate(refused)
    # The JSON form, and keys kept out of the settings' repr.
    settings = GatewaySettings(api_keys='{"k:with:colons": "frank"}')
    assert Authenticator(settings).authenticate(_conn(bearer("k:with:colons"))) == "frank"
    assert "k:with:colons" not in repr(settings) and SECRET not in repr(
        GatewaySettings(jwt_secret=SECRET)
    )


def test_malformed_api_keys_setting_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as refused:
        GatewaySettings(api_keys="secret-key-without-user")
    assert "secret-key-without-user" not in str(refused.value)


# --- every route, over HTTP ----------------------------------------------------------

PUBLIC = {"/healthz", "/readyz", "/metrics", "/"}


def _all_routes(routes: Iterable[BaseRoute]) -> Iterator[BaseRoute]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            yield from _all_routes(included.routes)
        else:
            yield route


def _depends_on(dependant: Dependant, call: object) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def _protected_routes(settings: GatewaySettings) -> list[tuple[str, str]]:
    app = create_app(settings)
    routes = []
    for route in _all_routes(app.routes):
        path = getattr(route, "path", "")
        if not path.startswith(("/v1/", "/api/")):
            continue
        path = path.replace("{conversation_id}", "c1").replace("{chat_id}", "c1")
        path = path.replace("{model_id}", "demo").replace("{message_id}", "m1")
        path = path.replace("{member_id}", "bob")
        assert "{" not in path, f"fill in the path parameter of {path}"
        if isinstance(route, APIWebSocketRoute):
            routes.append(("WS", path))
        elif isinstance(route, APIRoute):
            assert _depends_on(route.dependant, current_user), f"{path} skips current_user"
            routes.extend((method, path) for method in sorted(route.methods))
    return routes


def test_every_v1_and_api_route_is_behind_the_seam(settings: GatewaySettings) -> None:
    routes = _protected_routes(settings)
    # The routes of docs/api.md that exist must all be here (others are added over time).
    assert ("POST", "/v1/conversations/c1/messages") in routes
    assert ("WS", "/v1/ws") in routes
    assert ("GET", "/v1/models") in routes and ("GET", "/v1/models/demo") in routes
    assert len(routes) >= 5


async def test_every_route_needs_credentials(
    settings: GatewaySettings, gateway_url: str, backends: Any
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        for method, path in _protected_routes(settings):
            if method == "WS":
                continue
            kwargs: dict[str, Any] = {}
            if method in ("POST", "PATCH", "PUT"):
                kwargs["json"] = {"content": "hi", "title": "t", "messages": []}
            assert_unauthorized(await client.request(method, path, **kwargs))
            wrong = bearer(token(_key="another-secret-of-thirty-two-bytes!!"))
            assert_unauthorized(await client.request(method, path, headers=wrong, **kwargs))
        assert (await client.get("/healthz")).status_code == 200
        # With auth on, metrics only with LIVECHAT_METRICS_TOKEN (unset here).
        assert (await client.get("/metrics")).status_code == 404


async def test_the_caller_is_the_tokens_subject(
    gateway_url: str, backends: Any, worker: Any
) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        reply = await client.get("/v1/conversations", headers=bearer(token("alice")))
        assert reply.status_code == 200
        reply = await client.get("/v1/conversations", headers={"X-API-Key": API_KEY})
        assert reply.status_code == 200
        # EventSource can only put it in the URL.
        reply = await client.get("/v1/conversations", params={"access_token": token("carol")})
        assert reply.status_code == 200
        posted = await client.post(
            "/v1/conversations/auth-1/messages",
            json={"content": "hello"},
            headers=bearer(token("alice")),
        )
        assert posted.status_code == 200, posted.text
        # Not for a POST: a token in a URL ends up in proxies' and browsers' histories.
        refused = await client.post(
            "/v1/conversations/auth-2/messages",
            json={"content": "hello"},
            params={"access_token": token("alice")},
        )
        assert_unauthorized(refused)
    assert [r.user_id for r in backends.list_requests] == ["alice", "bob", "carol"]
    assert worker.requests[-1].user_id == "alice"
    assert [r.conversation_id for r in worker.requests] == ["auth-1"]


async def test_issued_development_tokens_are_accepted(
    settings: GatewaySettings, gateway_url: str, backends: Any
) -> None:
    issued = issue_token(settings, "dora")
    claims = jwt.decode(issued, SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["sub"] == "dora" and claims["iss"] == ISSUER
    assert 23.9 * 3600 < claims["exp"] - time.time() <= 24 * 3600
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        assert (await client.get("/v1/usage", headers=bearer(issued))).status_code == 200


def test_token_command_prints_a_token_or_explains_why_not() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    command = [sys.executable, "-m", "gateway.access.issue_jwt", "alice"]
    done = subprocess.run(
        command, env={**env, "LIVECHAT_JWT_SECRET": SECRET}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert "LIVECHAT_JWT_SECRET is not set" in line and "make token" in line


@pytest.mark.parametrize("secret", ["ten-bytes!", "x" * 31])
def test_token_command_refuses_a_secret_shorter_than_32_bytes(secret: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    command = [sys.executable, "-m", "gateway.access.issue_jwt", "alice"]
    env["LIVECHAT_JWT_SECRET"] = secret
    refused = subprocess.run(command, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stdout == ""
    [line] = refused.stderr.splitlines()  # one line, no PyJWT warning
    assert f"LIVECHAT_JWT_SECRET: {len(secret)} bytes, shorter than the 32 HS256 needs" in line
    assert secret not in line


def test_make_token_reads_the_secret_given_on_its_command_line(tmp_path: Path) -> None:
    # As `make token` runs it: the variable on make's command line, not exported.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVECHAT_")}
    root = Path(__file__).resolve().parents[2]
    python = Path(sys.executable)
    (tmp_path / "stamp").touch()
    # The Makefile's recipe with this interpreter (no reinstall: STAMP is satisfied).
    done = subprocess.run(
        [
            "make",
            "-s",
            "-C",
            str(root),
            "token",
            "USER=erin",
            f"LIVECHAT_JWT_SECRET={SECRET}",
            f"BIN={python.parent}",
            f"STAMP={tmp_path / 'stamp'}",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip().splitlines()[-1], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "erin"


# --- the WebSocket handshake ----------------------------------------------------------


def ws_url(gateway_url: str, query: str = "") -> str:
    return gateway_url.replace("http://", "ws://") + "/v1/ws" + (f"?{query}" if query else "")


async def test_websocket_handshake_needs_a_valid_token(gateway_url: str) -> None:
    for query, headers in (
        ("", {}),
        (f"access_token={token(_key='another-secret-of-thirty-two-bytes!!')}", {}),
        (f"access_token={token(exp=datetime.now(UTC) - timedelta(hours=1))}", {}),
        ("", {"X-API-Key": "not-a-key"}),
    ):
        with pytest.raises(InvalidStatus) as refused:
            async with websockets.connect(ws_url(gateway_url, query), additional_headers=headers):
                pass
        assert refused.value.response.status_code == 401
        assert json.loads(refused.value.response.body)["error"]["code"] == "unauthorized"

    for query, headers in (
        (f"access_token={token('alice')}", {}),
        ("", bearer(token("alice"))),
        ("", {"X-API-Key": API_KEY}),
    ):
        async with websockets.connect(ws_url(gateway_url, query), additional_headers=headers) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 20)) == {"type": "pong"}


async def test_a_websocket_is_closed_when_its_token_expires(gateway_url: str) -> None:
    short = token("alice", exp=datetime.now(UTC) + timedelta(seconds=3))
    async with websockets.connect(ws_url(gateway_url, f"access_token={short}")) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 20)) == {"type": "pong"}
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 30)
    assert ws.close_code == 1008 and ws.close_reason == "token expired"


async def test_websocket_messages_are_sent_as_the_tokens_user(
    gateway_url: str, backends: Any, worker: Any
) -> None:
    # With auth on, memory is asked whose the conversation is before anything is sent.
    async with websockets.connect(ws_url(gateway_url, f"access_token={token('erin')}")) as ws:
        frame = {"type": "message", "conversation_id": "auth-ws", "content": "hey"}
        await ws.send(json.dumps(frame))
        while True:
            got = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if got["type"] in ("done", "error"):
                break
    assert got["type"] == "done"
    assert [r.user_id for r in worker.requests] == ["erin"]


# --- tokens never reach the logs ------------------------------------------------------


@pytest.fixture
def server_log() -> Iterator[list[str]]:
    """What uvicorn logs (its access and error loggers do not propagate to the root)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.DEBUG)
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


async def test_tokens_in_urls_are_not_logged(
    gateway_url: str, backends: Any, server_log: list[str]
) -> None:
    secret_token = token("alice")
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20) as client:
        reply = await client.get(
            "/v1/conversations", params={"q": "x", "access_token": secret_token}
        )
        assert reply.status_code == 200
        bad = await client.get("/v1/usage", params={"access_token": secret_token + "x"})
        assert bad.status_code == 401
    async with websockets.connect(ws_url(gateway_url, f"access_token={secret_token}")) as ws:
        await ws.send(json.dumps({"type": "ping"}))
        await asyncio.wait_for(ws.recv(), 20)
    with pytest.raises(InvalidStatus):
        async with websockets.connect(ws_url(gateway_url, "access_token=wrong-token-value")):
            pass
    expected = (
        "/v1/conversations?q=x&access_token=[redacted]",
        "WebSocket /v1/ws?access_token=[redacted]",
    )
    for _ in range(400):  # the access log is written after the answer
        logged = "\n".join(server_log)
        if all(line in logged for line in expected):
            break
        await asyncio.sleep(0.05)
    # The requests were logged (with the rest of their query), the credentials were not.
    assert expected[0] in logged
    assert expected[1] in logged
    assert secret_token.split(".")[2] not in logged and "wrong-token-value" not in logged
